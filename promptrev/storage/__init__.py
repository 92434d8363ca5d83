"""Storage: everything that touches Git or defines SQL, and nothing above it.

It owns Git access (:mod:`.gitstore` with libgit2, :mod:`.gitremote` and ``git fsck`` with
real Git; nothing else in promptrev imports pygit2 or GitPython), the LFS object store
(:mod:`.objects`), the schema of both SQL databases (the index's tables in :mod:`.index`,
everything else, the event outbox's included, in :mod:`.tables`), the engines and their
migrations (:mod:`.sql`, :mod:`.migrations`), the index and the walk that keeps it up to
date with Git (:mod:`.indexer`), consistency checks (:mod:`.maintenance`), and the event
outbox (:mod:`.outbox`) through which it announces what happened without knowing who
listens.

Storage imports only :mod:`promptrev.errors` and :mod:`promptrev.model`. The feature
modules (accounts, reviews, webhooks, evaluations) run their own SQLAlchemy Core queries
over the tables storage defines.
"""
