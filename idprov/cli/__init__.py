"""The command line: Typer sub-apps that parse, call the core, and render."""
