"""registry_sync.registry"""
