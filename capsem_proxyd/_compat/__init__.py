"""Every place capsem-proxyd touches a third-party library's internals: one folder, each shim pinned and canaried."""
