"""The ``kepkreator`` click group every command module registers on."""
import click


@click.group()
@click.version_option(package_name="kepkreator")
def cli():
    """Synthetic, labelled EMNIST-style handwriting, at dataset scale."""


@cli.group()
def train():
    """Train generators and validators into model bundles."""
