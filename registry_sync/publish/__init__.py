"""registry_sync.publish.push_plan"""
