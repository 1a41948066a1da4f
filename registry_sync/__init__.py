"""registry_sync"""
