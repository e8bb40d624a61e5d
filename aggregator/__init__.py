"""The consortium's side: the aggregator service around :class:`secagg.SecAggServer`."""

__all__: list[str] = []
