from likeness.cli import app

app()
