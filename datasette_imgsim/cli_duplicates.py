"""`datasette imgsim duplicates`: copy groups of a table, as text, a CSV review list or JSON."""
from __future__ import annotations

import json
import os

import click

from . import review
from .cli import database_argument, index_db_option, method_option, opened, user_errors


def add_duplicates_command(group: click.Group) -> None:
    @group.command()
    @database_argument
    @click.option("--table", required=True)
    @method_option("Find candidates with this index only (default: every index of the table)")
    @click.option("--threshold", type=float,
                  help="Largest distance for a candidate pair of --method (default: each "
                       "method's generous candidate bound, e.g. phash 22, cnn 0.30); with "
                       "--no-verify, the largest distance between duplicates (phash 10, cnn 0.05)")
    @click.option("--neighbours", type=click.IntRange(min=1), default=20, show_default=True,
                  help="Nearest neighbours each image links to")
    @click.option("--no-verify", is_flag=True,
                  help="Group by the distance threshold alone, without verifying pairs")
    @click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1,
                  show_default="CPU count", help="Processes verifying pairs")
    @click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text",
                  show_default=True, help="csv: the review list, one row per member")
    @click.option("--json", "as_json", is_flag=True, help="Same as --format json")
    @index_db_option()
    @user_errors
    def duplicates(database, table, method, threshold, neighbours, no_verify, workers, fmt,
                   as_json, index_db):
        """Group the copies of TABLE's images, best copy first in each group.

        Candidate pairs come from each image's nearest neighbours; each is verified
        (local features, geometry, content) as a copy or a similar shot, and verdicts are
        kept in the index database, so a second run verifies only new pairs. Nothing is
        written to the photo database."""
        # Write access to the index database only, for its verdict cache.
        with opened(database, index_db, write=not no_verify) as images:
            found = images.duplicates(table, method, threshold, neighbours,
                                      verify=not no_verify, workers=workers)
        if as_json or fmt == "json":
            click.echo(json.dumps(found.to_dict(), indent=2, default=str))
        elif fmt == "csv":
            click.echo(review.to_csv(found), nl=False)
        else:
            click.echo(review.summary(found))
            for line in review.to_text(found):
                click.echo(line)
