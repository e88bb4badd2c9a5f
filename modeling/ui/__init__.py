"""The app's user interface (Gradio), a layer above `modeling.serving`: `handlers` (UI values in, service calls, UI
values out) and `page` (the Blocks layout, its wiring and guards, `serve`). `app.py` adds the command line."""

import os

# Before gradio is imported: it reads the variable at import time. The app phones no one home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
