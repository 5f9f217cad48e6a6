"""Adapters that let other frameworks use a ragserve service (``langchain``: the optional extra
``ragserve[langchain]``). Nothing in the core imports them."""
