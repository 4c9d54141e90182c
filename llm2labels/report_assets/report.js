// report.html: thumbnails for rows near the viewport, the label/synset filters, hierarchy buttons.
(() => {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const labelRows = Array.from(document.querySelectorAll("#labels .row:not(.hd)"));
  const synRows = Array.from(document.querySelectorAll("#synsets .row:not(.hd)"));

  // Each image's thumbnail is stored once; a row's <img data-t=i> gets data.src[i] when the row nears view.
  const fill = (row) => {
    for (const img of row.querySelectorAll("img[data-t]:not([src])")) img.src = data.src[+img.dataset.t];
  };
  if ("IntersectionObserver" in window) {
    const seen = new IntersectionObserver((entries) => {
      for (const e of entries) if (e.isIntersecting) { fill(e.target); seen.unobserve(e.target); }
    }, { rootMargin: "1200px 0px" });
    labelRows.forEach((row) => seen.observe(row));
  } else {
    labelRows.forEach(fill);
  }
  document.addEventListener("click", (ev) => {
    const img = ev.target.closest && ev.target.closest("img.ln[data-t]");
    if (img && data.link[+img.dataset.t]) window.open(data.link[+img.dataset.t], "_blank");
  });

  const q = document.getElementById("q");
  const minScore = document.getElementById("min-score");
  const minImages = document.getElementById("min-images");
  const show = (rows, needle, s, n) => {
    let shown = 0;
    for (const row of rows) {
      const ok = row.dataset.q.includes(needle) && +row.dataset.s >= s && +row.dataset.n >= n;
      row.hidden = !ok;
      if (ok) shown++;
    }
    return shown;
  };
  const apply = () => {
    const needle = q.value.trim().toLowerCase();
    const s = parseFloat(minScore.value) || 0;
    const n = parseInt(minImages.value, 10) || 0;
    const labels = show(labelRows, needle, s, n);
    const synsets = show(synRows, needle, s, n);
    document.getElementById("count").textContent = `${labels} of ${labelRows.length} labels`;
    document.getElementById("syn-count").textContent = `${synsets} of ${synRows.length} synsets`;
  };
  let timer = 0;
  const later = () => { clearTimeout(timer); timer = setTimeout(apply, labelRows.length > 2000 ? 120 : 30); };
  [q, minScore, minImages].forEach((el) => el.addEventListener("input", later));
  if (q.value || minScore.value || minImages.value) apply();  // the browser restored the inputs on reload

  const toggle = (open) => () => document.querySelectorAll("#hierarchy details").forEach((d) => { d.open = open; });
  const expand = document.getElementById("expand");
  if (expand) {
    expand.addEventListener("click", toggle(true));
    document.getElementById("collapse").addEventListener("click", toggle(false));
  }
})();
