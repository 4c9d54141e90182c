"""The report page: its HTML sections (page.py) and the CSS and script inlined into every report."""
