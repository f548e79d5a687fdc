"""Calls: the Call object, the call manager, scenarios and recording."""
