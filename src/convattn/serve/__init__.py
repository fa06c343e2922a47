"""`convattn serve`: a local web page for the trained caption models, the test set and the
report. app.py (FastAPI app and routes), models.py (loading and captioning), uploads.py
(checking uploaded images), testset.py (per-image scores of a run), templates/ and static/
(the page: plain HTML, CSS and JavaScript, nothing fetched from elsewhere)."""
