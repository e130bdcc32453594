"""Dashboard pages: each module has PATH, TITLE, layout(root, query) and register(app, root)."""
