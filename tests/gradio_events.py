"""What the browser does with a gradio 3.41 page's events, for tests that run without one.

``Page.trigger(component, "click")`` runs, in the order they were bound, the Python functions
bound to that event of that component (``Blocks.dependencies`` / ``Blocks.fns``), each with its
inputs' current values; what a function returns goes to its outputs (a plain value, or a
``gr.update``'s value / visible / interactive), and every output whose value changed fires its
own "change" event, as gradio's frontend does. JavaScript-only events (``fn=None``) are skipped.
The browser test (tests/test_browser.py) drives the real frontend.
"""

import gradio as gr

PROPERTIES = ("value", "visible", "interactive")
UPDATES = ("generic_update", "update")  # gr.update(...), Component.update(...)


class Page:
    def __init__(self, demo: gr.Blocks):
        self.demo = demo
        self.state: dict[int, dict] = {}  # component id -> its properties in the "browser"

    def _props(self, component_id: int) -> dict:
        if component_id not in self.state:
            block = self.demo.blocks[component_id]
            self.state[component_id] = {p: getattr(block, p, None) for p in PROPERTIES}
        return self.state[component_id]

    def get(self, component, prop: str = "value"):
        return self._props(component._id)[prop]

    def set(self, component, value) -> None:
        """A user changes a control."""
        self._assign(component._id, value)

    def trigger(self, component, event: str) -> None:
        self._fire(component._id, event)

    def _assign(self, component_id: int, value) -> None:
        props = self._props(component_id)
        changed = props["value"] != value
        props["value"] = value
        if changed:
            self._fire(component_id, "change")

    def _fire(self, component_id: int, event: str) -> None:
        for dep, fn in zip(self.demo.dependencies, self.demo.fns):
            if component_id not in dep["targets"] or dep["trigger"] != event or fn.fn is None:
                continue
            result = fn.fn(*[self.get_id(i) for i in dep["inputs"]])
            outputs = dep["outputs"]
            results = [result] if len(outputs) == 1 else list(result or [])
            assert len(results) == len(outputs), f"{fn.fn} returned {len(results)} values for {len(outputs)} outputs"
            changed = []
            for output, value in zip(outputs, results):
                props = self._props(output)
                if isinstance(value, dict) and value.get("__type__") in UPDATES:
                    for prop in ("visible", "interactive"):
                        if prop in value:
                            props[prop] = value[prop]
                    if "value" not in value:
                        continue
                    value = value["value"]
                if props["value"] != value:
                    props["value"] = value
                    changed.append(output)
            for output in changed:
                self._fire(output, "change")

    def get_id(self, component_id: int):
        return self._props(component_id)["value"]
