"""The agent desktop and the group leader's console: web pages and their HTTP JSON API, served by
each site node (starlette on uvicorn, inside the site's event loop)."""
