// T-SAM: plain-words tooltips on the accordion's controls. The texts come from the accordion
// itself (data-tooltips on its intro, written from tsam_ext/settings.py), so they live in one place.
onUiUpdate(function() {
    gradioApp().querySelectorAll('.tsam-tooltips:not([data-tsam-applied])').forEach(function(holder) {
        var tips = JSON.parse(holder.dataset.tooltips);
        var missing = 0;
        Object.keys(tips).forEach(function(id) {
            var block = gradioApp().getElementById(id);
            if (!block) {
                missing += 1;
                return;
            }
            block.title = tips[id];
            block.querySelectorAll('label, span, input').forEach(function(el) {
                el.title = tips[id];
            });
        });
        if (!missing) {
            holder.dataset.tsamApplied = '1';
        }
    });
});
