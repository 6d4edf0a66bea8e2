from likeness.client.cli import app

app()
