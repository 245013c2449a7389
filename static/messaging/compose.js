// Compose form behaviour (drafts and templates): after a failed save, the first language tab with
// an error is shown and the first invalid field focused; leaving with unsaved changes asks first;
// the chosen context type's explanation; a group's members shown before sending to it.
// Loaded from 'self' (CSP: no inline scripts, no inline handlers).
(function () {
  "use strict";

  var FORM_ID = "compose-form";

  function composeForm() {
    return document.getElementById(FORM_ID);
  }

  function isVisible(element) {
    return !element.hidden && element.getClientRects().length > 0;
  }

  // Errors ----------------------------------------------------------------------------------------

  // A field the rich-text editor replaces on screen is hidden; its editable area (next to it,
  // in the same field wrapper) is what takes the focus.
  function focusableFor(field) {
    if (isVisible(field)) {
      return field;
    }
    var wrapper = field.parentElement;
    var editable = wrapper && wrapper.querySelector('[contenteditable="true"]');
    return editable && isVisible(editable) ? editable : null;
  }

  function showFirstError(form) {
    var tab = form.querySelector("[role=tab][data-has-errors]");
    if (tab && window.bootstrap) {
      window.bootstrap.Tab.getOrCreateInstance(tab).show();
    }
    // .is-invalid too: Bootstrap's mark, for a field rendered without aria-invalid.
    var invalid = form.querySelectorAll('[aria-invalid="true"], .is-invalid');
    for (var i = 0; i < invalid.length; i++) {
      var target = focusableFor(invalid[i]);
      if (target) {
        target.focus();
        return;
      }
    }
    var summary = form.querySelector("#form-errors");
    if (summary) {
      summary.focus();
    }
  }

  // Unsaved changes -------------------------------------------------------------------------------

  // Changed: a field of the form was edited (the rich-text editor dispatches `input` on its
  // textarea) or a recipient added or removed; and the form differs from what was loaded.
  // Saving: the form was submitted; a successful save answers with a redirect (HX-Redirect),
  // so leaving is then expected; a failed save re-renders the form, still unsaved.
  var changed = false;
  var saving = false;
  var baseline = null;

  function serialize(form) {
    var parts = [];
    new FormData(form).forEach(function (value, name) {
      var field = form.elements.namedItem(name);
      if (field && field.hasAttribute && field.hasAttribute("data-not-a-change")) {
        return;
      }
      parts.push(name + "=" + (value instanceof File ? value.name + ":" + value.size : value));
    });
    return parts.join("&");
  }

  function hasUnsavedChanges() {
    var form = composeForm();
    return Boolean(form) && changed && !saving && (baseline === null || serialize(form) !== baseline);
  }

  function noteChange(event) {
    var target = event.target;
    if (target.closest && target.closest("#" + FORM_ID) && !target.closest("[data-not-a-change]")) {
      changed = true;
    }
  }
  document.addEventListener("input", noteChange);
  document.addEventListener("change", noteChange);
  document.body.addEventListener("recipients-changed", function () {
    if (composeForm()) {
      changed = true;
    }
  });

  document.addEventListener("submit", function (event) {
    if (event.target.id === FORM_ID) {
      saving = true;
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    // requestConfig.elt: the form that asked, even after the swap replaced it (detail.elt is
    // then the parent htmx tells instead).
    var detail = event.detail;
    var config = detail.requestConfig || {};
    if (!config.elt || config.elt.id !== FORM_ID || config.verb !== "post") {
      return;
    }
    var redirected = detail.successful && detail.xhr && detail.xhr.getResponseHeader("HX-Redirect");
    if (!redirected) {
      saving = false;
    }
  });

  window.addEventListener("beforeunload", function (event) {
    if (hasUnsavedChanges()) {
      event.preventDefault();
      event.returnValue = ""; // older browsers show the prompt only with a return value
    }
  });

  // Context type explanation ----------------------------------------------------------------------

  function showContextTypeHelp(select) {
    var help = document.getElementById("context-type-help");
    if (!help) {
      return;
    }
    help.querySelectorAll("[data-context-type-help]").forEach(function (text) {
      text.hidden = text.dataset.contextTypeHelp !== select.value;
    });
  }

  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-context-type-select]")) {
      showContextTypeHelp(event.target);
    }
  });

  // Group members ---------------------------------------------------------------------------------

  function labels() {
    var container = document.getElementById("chosen-recipients");
    return (container && container.dataset) || {};
  }

  function loadMembers(toggle, panel) {
    var text = labels();
    panel.dataset.loaded = "true";
    panel.textContent = text.labelLoading || "…";
    function checkLoaded() {
      if (!panel.querySelector("[data-total]")) {
        delete panel.dataset.loaded; // refused or failed: the next click tries again
        panel.textContent = text.labelLoadFailed || "";
      }
    }
    var request = window.htmx.ajax("GET", toggle.dataset.membersUrl, { target: panel, swap: "innerHTML" });
    request.then(checkLoaded, checkLoaded);
  }

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest("[data-members-toggle]");
    if (!toggle) {
      return;
    }
    var panel = document.getElementById(toggle.getAttribute("aria-controls"));
    if (!panel) {
      return;
    }
    var expand = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", expand ? "true" : "false");
    panel.hidden = !expand;
    if (expand && !panel.dataset.loaded) {
      loadMembers(toggle, panel);
    }
  });

  // A chosen group (a chip) gets a "Members" disclosure with its panel right after the chip; the
  // panel goes when the chip does.
  function decorateGroupChips() {
    var container = document.getElementById("chosen-recipients");
    if (!container) {
      return;
    }
    var text = labels();
    container.querySelectorAll(".recipient-chip[data-members-url]").forEach(function (chip) {
      if (chip.querySelector("[data-members-toggle]")) {
        return;
      }
      var panelId = "chosen-members-" + chip.dataset.recipient;
      var toggle = document.createElement("button");
      toggle.type = "button";
      // Margins: room around the close button next to it (WCAG 2.2 target size).
      toggle.className = "btn btn-sm btn-light py-0 px-1 ms-2 me-2";
      toggle.dataset.membersToggle = "";
      toggle.dataset.membersUrl = chip.dataset.membersUrl;
      toggle.dataset.testid = "chip-members-" + chip.dataset.recipient;
      toggle.setAttribute("aria-expanded", "false");
      toggle.setAttribute("aria-controls", panelId);
      var name = (text.labelMembersOf || "%(group)s").replace("%(group)s", chip.dataset.label || "");
      toggle.setAttribute("aria-label", name);
      toggle.textContent = text.labelMembers || "Members";
      chip.insertBefore(toggle, chip.querySelector("[data-remove-recipient]"));
      var panel = document.createElement("div");
      panel.id = panelId;
      panel.className = "w-100 border rounded p-2";
      panel.dataset.membersPanel = chip.dataset.recipient;
      panel.hidden = true;
      chip.after(panel);
    });
    container.querySelectorAll("[data-members-panel]").forEach(function (panel) {
      if (!container.querySelector('.recipient-chip[data-recipient="' + panel.dataset.membersPanel + '"]')) {
        panel.remove();
      }
    });
  }

  document.body.addEventListener("recipients-changed", decorateGroupChips);

  // Start, and again whenever htmx brings a new form (a failed save) --------------------------------

  function start(form, afterFailedSave) {
    var select = form.querySelector("[data-context-type-select]");
    if (select) {
      showContextTypeHelp(select);
    }
    decorateGroupChips();
    if (afterFailedSave) {
      showFirstError(form);
    }
  }

  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target.id === FORM_ID) {
      start(event.target, true);
    }
  });

  function startPage() {
    var form = composeForm();
    if (!form) {
      return;
    }
    var failed = Boolean(document.getElementById("form-errors"));
    // A page that shows a failed save holds what was posted, not what is saved.
    changed = failed;
    baseline = failed ? null : serialize(form);
    start(form, failed);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startPage);
  } else {
    startPage();
  }
})();
