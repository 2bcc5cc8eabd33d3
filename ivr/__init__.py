"""Interactive voice response: menus, caller lookup and prompts (built on the FastAGI session)."""
