() => {
    // Stand-in of A1111's javascript/inputAccordion.js (written anew, same behaviour): each
    // .input-accordion gets a visible checkbox in its header, tied to the hidden gradio checkbox
    // <id>-checkbox that carries the value. Until the user clicks that box, opening the accordion
    // ticks it and closing unticks it; after a click the two are independent.
    const link = (accordion) => {
        const header = accordion.querySelector(".label-wrap");
        const hidden = document.querySelector("#" + accordion.id + "-checkbox input");
        const box = document.createElement("input");
        const isOpen = () => header.classList.contains("open");
        let followsHeader = true;

        box.type = "checkbox";
        box.id = accordion.id + "-visible-checkbox";
        box.className = hidden.className + " input-accordion-checkbox";
        box.checked = isOpen();
        header.querySelector("span").prepend(box);

        // gradio's checkbox reads its value from the input event's currentTarget
        accordion.pushValue = () => {
            if (followsHeader && isOpen() !== box.checked) header.click();
            hidden.checked = box.checked;
            hidden.dispatchEvent(new Event("input", {bubbles: true}));
        };
        accordion.visibleCheckbox = box;
        box.addEventListener("click", (event) => {
            followsHeader = false;
            event.stopPropagation();  // a click on the box must not also toggle the accordion
        });
        box.addEventListener("input", accordion.pushValue);
        new MutationObserver(() => {
            accordion.classList.toggle("input-accordion-open", isOpen());
            if (followsHeader) {
                box.checked = isOpen();
                accordion.pushValue();
            }
        }).observe(header, {attributes: true, attributeFilter: ["class"]});
    };

    // called by the hidden checkbox's .change (ui_components.InputAccordion), e.g. on infotext paste
    window.inputAccordionChecked = (id, checked) => {
        const accordion = document.getElementById(id);
        accordion.visibleCheckbox.checked = checked;
        accordion.pushValue();
    };
    document.querySelectorAll(".input-accordion").forEach(link);
}
