"""Every saved message must parse as a structured-mode CloudEvent with the official SDK."""
import json
import sys
from pathlib import Path

from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka_event

directory = Path(sys.argv[1])
files = sorted(directory.glob("*.json")) if directory.is_dir() else []
if not files:
    sys.exit(f"cloudevents: no saved messages in {directory} (the backend's event tests write them)")
checked = failed = 0
for path in files:
    for i, saved in enumerate(json.loads(path.read_text())):
        where = f"{path.name}[{i}]"
        message = KafkaMessage(
            headers={k: v.encode() for k, v in saved["headers"].items()},
            key=saved["key"].encode(),
            value=saved["value"].encode(),
        )
        checked += 1
        try:
            event = from_kafka_event(message)
            body = json.loads(saved["value"])
            attributes = event.get_attributes()
            for attribute in ("id", "source", "type", "specversion", "subject"):
                if str(attributes.get(attribute)) != str(body[attribute]):
                    raise ValueError(f"{attribute}: {attributes.get(attribute)!r} != {body[attribute]!r}")
            if event.get_data() != body["data"]:
                raise ValueError("data differs from the message's data")
        except Exception as e:  # noqa: BLE001 - report every message, then fail
            failed += 1
            print(f"FAIL {where}: {type(e).__name__}: {e}")
print(f"cloudevents: {checked - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
