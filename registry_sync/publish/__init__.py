"""Publishing: push the plan's canonical images with cache and immutable tags, record them in
images.lock.json, pull nodes back as a build cache, promote aliases with evidence, pin user files, sync
registries and describe every tag in a catalog.

Owns: push.py (image -> registry, only missing blobs), store.py (the registry as an image store: find by
content tag, get, put), compress.py (deterministic gzip + cache),
push_plan.py (the plan's nodes, the lock and its artifact), images_lock.py, tag_policy.py, cache.py,
promote.py, pin.py, sync.py, catalog.py (Markdown), site.py + site_templates/ (the HTML catalog site),
lock_channel.py (images.lock.json under images-lock:r<N> / :latest, `strata lock pull`); the evidence users
check: sbom.py (CycloneDX SBOM from the locks), attest.py (keys, in-toto statements, DSSE signing and verification, images.lock.json.sig), referrers.py (documents
next to an image: OCI 1.1 artifacts under the tag schema fallback), evidence.py (strata sign / verify-signature).
May import: registry_sync.registry, builder.engine, builder.lock,
builder.plan, builder.oci, builder.matrix, validate.smoke and validate.bench (promotion evidence),
builder.events, builder.errors, builder.settings.
"""
