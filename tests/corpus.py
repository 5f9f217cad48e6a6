"""A tiny corpus with one unambiguous answer per question, for graph and HTTP tests."""

DOCUMENTS = [
    {
        "id": "guide/serve-batching.md",
        "content_type": "technical",
        "metadata": {"source": "guide", "tags": "serving"},
        "text": (
            "# Dynamic batching\n\nThe embedder groups concurrent requests with serve.batch. "
            "The max_batch_size option caps how many texts go into one model call, and "
            "batch_wait_timeout_s bounds how long a batch waits to fill. Set "
            "max_ongoing_requests at least as high as max_batch_size, otherwise batches "
            "can never fill."
        ),
    },
    {
        "id": "guide/qdrant-local.md",
        "content_type": "technical",
        "metadata": {"source": "guide", "tags": "storage"},
        "text": (
            "# Vector storage\n\nQdrant local mode keeps the collection in a folder on disk. "
            "Only one process may open that folder at a time, so the retriever runs a "
            "single replica in local mode. Point the retriever at a Qdrant server URL to "
            "scale it out."
        ),
    },
    {
        "id": "notes/coffee.txt",
        "content_type": "general",
        "metadata": {"source": "notes", "tags": "kitchen"},
        "text": (
            "The office espresso machine needs descaling every two weeks. Use the blue "
            "descaling tablets kept in the cupboard above the sink, and run two empty cycles "
            "afterwards."
        ),
    },
]

QUESTIONS = [
    ("How often does the espresso machine need descaling?", "notes/coffee.txt"),
    ("Why does the retriever run only one replica in Qdrant local mode?", "guide/qdrant-local.md"),
    ("What should max_ongoing_requests be relative to max_batch_size?", "guide/serve-batching.md"),
]
