"""How a worker subprocess reports to the check: progress lines, then one last line, RESULT_MARK and its
result as JSON."""
import json

RESULT_MARK = "GPU_CHECK_RESULT "  # a worker's last line: this prefix, then its result as JSON


def emit(status: str, summary: str, **figures) -> None:
    print(RESULT_MARK + json.dumps({"status": status, "summary": summary, **figures}), flush=True)


def progress(message: str) -> None:
    print(message, flush=True)


def worker_result(lines: list[str]) -> dict | None:
    for line in reversed(lines):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    return None
