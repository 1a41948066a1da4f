"""The plan: every cell expanded into its chain of layer nodes, each with a content hash, tags and a rendered
Dockerfile; shared nodes appear once. Pure: reads matrix.yaml, templates, requirements and lock files, never
Docker or the network.

Owns: graph.py (Plan, LayerNode, build_plan), layers.py (the table of layer kinds graph.py walks), render.py
(Jinja2 templates), tags.py (tag templates), lockfile.py (the lock-file format a node reads), github.py (the plan
as a GitHub Actions matrix), write.py (rendered Dockerfiles to disk), retention.py (what `strata gc` deletes, from
inventories of the engine and the caches), budgets.py (each node's size budget and the verdict on a size).
May import: builder.matrix, builder.errors,
builder.settings.
"""
