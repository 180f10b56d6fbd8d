"""Dead letters: the record that failed, with its error context, kept so nothing is lost.

`DeadLetter` is the stored record (`dead_letter` builds it from a bad record);
`DeadLetterQueue` is the contract a job writes to; `FileDeadLetterQueue` keeps JSON
lines on disk, `MemoryDeadLetterQueue` a list (tests). The Kafka queue lives in
`velostream.dlq.kafka`, imported only for a job with `dlq.type = kafka`, so file-only
users never need confluent-kafka. `ReplayLog` remembers which letters were replayed,
`letters_to_replay` picks those still to send.

Layer: this package sits above datasource/, engine/ and observability/ and below
server/; it never imports upward.
"""

from velostream.dlq.file import FileDeadLetterQueue
from velostream.dlq.letter import DeadLetter, dead_letter, decode_payload, encode_payload
from velostream.dlq.memory import MemoryDeadLetterQueue
from velostream.dlq.queue import DeadLetterQueue
from velostream.dlq.replay import ReplayLog, letters_to_replay

__all__ = [
    "DeadLetter",
    "DeadLetterQueue",
    "FileDeadLetterQueue",
    "MemoryDeadLetterQueue",
    "ReplayLog",
    "dead_letter",
    "decode_payload",
    "encode_payload",
    "letters_to_replay",
]
