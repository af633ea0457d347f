"""Mirrors modules/ui_components.py: ``InputAccordion`` (a hidden gr.Checkbox that is the value,
plus a gr.Accordion that follows it) and the ``Form*`` containers, on gradio 3.41."""

import gradio as gr

class FormComponent:
    def get_expected_parent(self):
        return gr.components.Form

gr.Dropdown.get_expected_parent = FormComponent.get_expected_parent

class FormRow(FormComponent, gr.Row):
    def get_block_name(self):
        return "row"

class FormColumn(FormComponent, gr.Column):
    def get_block_name(self):
        return "column"

class FormGroup(FormComponent, gr.Group):
    def get_block_name(self):
        return "group"

class FormHTML(FormComponent, gr.HTML):
    def get_block_name(self):
        return "html"

class InputAccordion(gr.Checkbox):
    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        super().__init__(value, **{**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False})
        self.change(fn=None, _js='function(checked){ inputAccordionChecked("' + self.accordion_id + '", checked); }', inputs=[self])
        self.accordion = gr.Accordion(**{**kwargs, "elem_id": self.accordion_id, "label": kwargs.get("label", "Accordion"),
                                         "elem_classes": ["input-accordion"], "open": value})

    def extra(self):
        return gr.Column(elem_id=self.accordion_id + "-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"
