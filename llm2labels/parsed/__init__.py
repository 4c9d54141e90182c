"""Parsed columns: every stored sample parsed once (label spans, normalised labels, token aggregates) into
numpy columns beside the sample store, and post-processing as group-bys over them.

- parse.py: the parse pass over a byte range of a sample file (a `Part`);
- columns.py: the parts on disk (`<store>/parsed/<version>/`), parsed when missing, loaded for a run;
- score.py: pooling, the filters, images.jsonl lines and the dataset ranking over a chunk of images;
- version.py: the parser version that keys the columns (a change to the parser or normaliser re-parses).

`score_run.score_columns` is the entry point; docs/architecture.md shows where it sits in a run.
"""
