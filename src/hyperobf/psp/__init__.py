"""The Privacy Service Provider (thesis §2.2.2, §4.2) as an HTTP service.

Accounts are verified (pluggable), authenticated with bearer tokens (stored hashed), and
request per-user MaskNets that a trained HyperNet generates from CSPRNG latents. Each new
net is checked against every net already issued (functional distance on a fixed probe
batch) and re-drawn when too close; per-account and per-client limits bound how many nets
one party can collect (§5.4). Storage: SQLAlchemy (SQLite file or PostgreSQL) + Alembic.

Modules: config (PSPConfig), db (tables, engine), migrate (Alembic), secrets (tokens,
Fernet), verify (identity verifiers), fingerprint (probe δ fingerprints), engine
(checkpoint -> weights -> model files), batcher (micro-batching), issuance (limits,
near-duplicate re-draws, records), api (FastAPI app).
"""
