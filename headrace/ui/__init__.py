"""The web UI: static files the gateway serves (`headrace.services.gateway.ui`).

Plain ES modules, no build step: `static/app.js` routes the pages, `static/vendor/`
holds the editor (CodeMirror 6, copied unchanged by `tools/vendor_ui.sh`).
"""
