"""`convattn serve`: a local web page for the trained caption models, the test set and the
report. app.py (FastAPI app and routes), guard.py (Host, Origin and body checks on every
route), models.py (loading and captioning), uploads.py (an upload to a model's tensor),
images.py (untrusted bytes to an image, or a sentence), workers.py (decoding in processes
with a CPU and memory budget), testset.py (per-image scores of a run), templates/ and
static/ (the page: plain HTML, CSS and JavaScript, nothing fetched from elsewhere)."""
