"""``commer-pipeline inspect STORE``: print a committed store's manifest and a few rows."""

from __future__ import annotations

from collections import Counter

import click

from jobs.errors import cli_errors


@click.command("inspect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("store")
@click.option("--rows", "n_rows", type=click.IntRange(min=0), default=5, show_default=True, help="Rows to show.")
@click.option("--user", "users", multiple=True, metavar="ID", help="Show these users (repeatable) instead of the first rows.")
@click.option("--checkpoint", default=None, metavar="DIR", help="Also check the store against this checkpoint.")
@cli_errors
def inspect(store: str, n_rows: int, users: tuple[str, ...], checkpoint: str | None) -> None:
    """Print STORE's manifest, files, a few rows and its dead letters by reason.

    STORE is a directory written by `commer-pipeline compress` (local, gs://, s3://); its
    LATEST version is shown (or give a v-* version directory itself). A version without
    _MANIFEST.json is not committed and is refused.
    """
    import numpy as np

    from commer_core.store import embedding_matrix, open_store

    s = open_store(store)
    if checkpoint:
        s.check_compatible(checkpoint)

    click.echo(f"store {s.uri}" + (f" (version {s.version}, from LATEST)" if s.version else ""))
    click.echo("manifest:")
    click.echo("  " + s.manifest.to_json().rstrip().replace("\n", "\n  "))
    click.echo(f"files: {len(s.embedding_files)} embeddings-*.parquet, {len(s.document_files)} documents-*.parquet, "
               f"{len(s.dead_letter_files)} dead_letter-*.parquet")
    if checkpoint:
        click.echo(f"checkpoint {checkpoint}: compatible (same fingerprint)")

    k, d = s.num_embeddings, s.hidden_size
    if users:
        found = s.get(users)
        missing = [u for u in users if u not in found]
        rows = [(u, *found[u]) for u in users if u in found]
    else:
        table = s.head(n_rows)
        emb = embedding_matrix(table.column("embedding"), k, d)
        rows = [(u, emb[i], n) for i, (u, n) in enumerate(zip(table.column("user_id").to_pylist(),
                                                               table.column("n_docs").to_pylist()))]
        missing = []
    click.echo(f"rows ({len(rows)} shown; embedding is k x d = {k} x {d} float32):")
    for user, embedding, n_docs in rows:
        head = ", ".join(f"{v:+.4f}" for v in embedding.reshape(-1)[:4])
        click.echo(f"  {user}: n_docs={n_docs} norm={float(np.linalg.norm(embedding)):.3f} first=[{head}, ...]")
    for user in missing:
        click.echo(f"  {user}: not in the store")

    dead = s.dead_letters()
    reasons = Counter(dead.column("reason").to_pylist())
    click.echo(f"dead letters: {dead.num_rows}")
    for reason, count in reasons.most_common(10):
        click.echo(f"  {count:6d}  {reason}")
