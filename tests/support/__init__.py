"""Helpers the tests share: the fake provider, SDK callers, daemons, policies written for tests."""
