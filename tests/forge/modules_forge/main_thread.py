"""Mirrors modules_forge/main_thread.py: model work queued to Forge's one main thread;
``run_and_wait_result`` waits for its task and returns its result, or None when it raised (the
main thread prints the traceback and keeps the exception to itself). ``threads`` records which
thread ran each task (tests read it)."""

import threading
import traceback

threads = []


class Task:
    def __init__(self, func, args, kwargs):
        self.func, self.args, self.kwargs = func, args, kwargs
        self.result = self.exception = None

    def work(self):
        threads.append(threading.current_thread())
        try:
            self.result = self.func(*self.args, **self.kwargs)
        except Exception as e:
            traceback.print_exc()
            self.exception = e


def run_and_wait_result(func, *args, **kwargs):
    task = Task(func, args, kwargs)
    worker = threading.Thread(target=task.work, name="forge-main-thread")
    worker.start()
    worker.join()
    return task.result
