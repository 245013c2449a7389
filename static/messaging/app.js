// Staff UI behaviour. Loaded from 'self' (CSP: no inline scripts, no inline handlers).
(function () {
  "use strict";

  document.documentElement.classList.add("js");

  // Language switcher: submit as soon as a language is chosen.
  document.addEventListener("change", function (event) {
    var select = event.target.closest("select[data-autosubmit]");
    if (select && select.form) {
      select.form.requestSubmit();
    }
  });

  // Recipients: add a chip (with its hidden input) from a search result, remove it again.
  function chipFor(kind, pk, label, container) {
    var chip = document.createElement("span");
    chip.className = "recipient-chip badge rounded-pill " + (kind === "groups" ? "text-bg-info" : "text-bg-light border");
    chip.dataset.recipient = kind + "-" + pk;
    var input = document.createElement("input");
    input.type = "hidden";
    input.name = kind;
    input.value = pk;
    chip.appendChild(input);
    var prefix = kind === "groups" ? (container.dataset.labelGroup || "Group") + ": " : "";
    chip.appendChild(document.createTextNode(prefix + label));
    var remove = document.createElement("button");
    remove.type = "button";
    remove.className = "btn-close btn-close-sm ms-1";
    remove.dataset.removeRecipient = "";
    remove.setAttribute("aria-label", (container.dataset.labelRemove || "Remove") + " " + label);
    chip.appendChild(remove);
    return chip;
  }

  function recipientsChanged() {
    document.body.dispatchEvent(new CustomEvent("recipients-changed"));
  }

  document.addEventListener("click", function (event) {
    var add = event.target.closest("[data-add-recipient]");
    if (add) {
      var container = document.getElementById("chosen-recipients");
      var kind = add.dataset.addRecipient;
      var pk = add.dataset.pk;
      if (container && !container.querySelector('[data-recipient="' + kind + "-" + pk + '"]')) {
        var chip = chipFor(kind, pk, add.dataset.label, container);
        if (add.dataset.membersUrl) {
          // compose.js gives the chip its "Members" disclosure, as for chips the server renders.
          chip.dataset.membersUrl = add.dataset.membersUrl;
          chip.dataset.label = add.dataset.label;
        }
        container.appendChild(chip);
        recipientsChanged();
      }
      add.classList.add("active");
      return;
    }
    var remove = event.target.closest("[data-remove-recipient]");
    if (remove) {
      remove.closest(".recipient-chip").remove();
      recipientsChanged();
      return;
    }
    var insert = event.target.closest("[data-insert-placeholder]");
    if (insert) {
      insertPlaceholder(insert);
    }
  });

  // A language tab says "uses default" exactly while its subject and body are both empty.
  document.addEventListener("input", function (event) {
    var pane = event.target.closest("[data-language-pane]");
    var badge = pane && document.querySelector('[data-fallback-badge="' + pane.dataset.languagePane + '"]');
    if (!badge) {
      return;
    }
    var fields = pane.querySelectorAll("input[type=text], textarea");
    badge.hidden = Array.prototype.every.call(fields, function (field) {
      return !field.value.trim();
    }) === false;
  });

  // Resend page: the button says how many a resend queues, with or without permanent failures.
  document.addEventListener("change", function (event) {
    if (event.target.id !== "include-permanent") {
      return;
    }
    var button = document.getElementById("confirm-resend");
    if (!button.dataset.labelDefault) {
      button.dataset.labelDefault = button.textContent.trim();
    }
    button.textContent = event.target.checked ? button.dataset.labelAll : button.dataset.labelDefault;
  });

  // Send page: typing a send time chooses "Send at a later time"; choosing "Send now" clears it.
  document.addEventListener("input", function (event) {
    if (event.target.id === "id_send_at" && event.target.value) {
      var later = document.querySelector('input[name="when"][value="later"]');
      if (later) {
        later.checked = true;
      }
    }
  });
  document.addEventListener("change", function (event) {
    if (event.target.name === "when" && event.target.value === "now") {
      var sendAt = document.getElementById("id_send_at");
      if (sendAt) {
        sendAt.value = "";
      }
    }
  });

  // Regions htmx refreshes (the status page every 2 s, the operations page) are not live regions:
  // a screen reader would re-read them whole on every poll, and one inserted anew is not reliably
  // read at all. Their [data-announce] elements are read out instead, politely, by the
  // #live-announcer that base.html keeps on every page: a text once when it changes (keyed by
  // the attribute's value), never on page load and never again while it stays the same.
  var announced = null;
  function announceChanges() {
    var announcer = document.getElementById("live-announcer");
    if (!announcer) {
      return;
    }
    var seen = {};
    var changed = [];
    document.querySelectorAll("[data-announce]").forEach(function (element) {
      var key = element.dataset.announce || element.id;
      var text = element.textContent.replace(/\s+/g, " ").trim();
      seen[key] = text;
      if (announced !== null && text && announced[key] !== text) {
        changed.push(text);
      }
    });
    announced = seen;
    if (changed.length) {
      announcer.textContent = changed.join(" ");
    }
  }
  document.addEventListener("DOMContentLoaded", announceChanges);
  document.addEventListener("htmx:afterSettle", announceChanges);

  // The status page's poll: when nothing changed the server answers 204 (htmx leaves the page as
  // it is) and says when it checked ("<ISO time> <HH:MM:SS>"), which "Updated" then shows.
  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    var checked = xhr && xhr.status === 204 && xhr.getResponseHeader("X-Status-Checked");
    var time = checked && document.querySelector("#updated-at time");
    if (time) {
      var parts = checked.split(" ");
      time.setAttribute("datetime", parts[0]);
      time.textContent = parts[1] || "";
    }
  });

  // Answers that come back after the region they were for was replaced. A page region that polls
  // (hx-trigger="every …") and the actions and filters beside it swap the same elements (the
  // status page's answers also swap its summary out of band, and htmx looks for those targets
  // beside the element that asked). An answer whose asker or target another answer replaced
  // meanwhile would land nowhere (htmx:oobErrorNoTarget, or a swap into a detached element).
  // - A poll's answer is dropped while an action (any POST) is on its way, and once its own
  //   element or target is gone: the newer answer is on screen or coming, the next poll follows.
  // - Any other answer whose target was replaced goes to the element that has its id now. One
  //   whose asker is gone (an action's form inside a summary that a newer answer replaced) has
  //   only its out-of-band parts swapped, against the whole document: the action's outcome shows,
  //   and the receivers the newer answer shows (maybe for a newer search) stay.
  // (Aborting polls instead, with hx-sync, logs htmx:sendAbort as an error.) The check listens on
  // the asking element itself: htmx dispatches the answer's events there, and an event dispatched
  // on an element no longer in the page never reaches a listener on the document.
  var actionsPending = new Set();

  function isPoll(config) {
    return config.verb === "get" && /^\s*every\s/.test(config.elt.getAttribute("hx-trigger") || "");
  }

  function checkAnswer(event) {
    var info = event.detail;
    var asker = info.requestConfig.elt;
    var target = info.target;
    if (isPoll(info.requestConfig)) {
      if (actionsPending.size > 0 || !asker.isConnected || !target.isConnected) {
        event.preventDefault();
      }
      return;
    }
    var current = target.isConnected ? target : target.id && document.getElementById(target.id);
    if (!current) {
      event.preventDefault();
    } else if (!asker.isConnected) {
      event.preventDefault();
      if (info.xhr.status >= 200 && info.xhr.status < 300 && info.xhr.response) {
        htmx.swap(current, info.xhr.response, { swapStyle: "none" }, { eventInfo: info });
      }
    } else {
      info.target = current;
    }
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var config = event.detail.requestConfig;
    var xhr = event.detail.xhr;
    // Once per element (addEventListener ignores the same listener added again).
    config.elt.addEventListener("htmx:beforeOnLoad", checkAnswer);
    if (config.verb !== "get") {
      actionsPending.add(xhr);
      // Also when the request fails and its element is gone (no htmx event reaches us then).
      xhr.addEventListener("loadend", function () {
        actionsPending.delete(xhr);
      });
    }
  });

  // Placeholders: insert "{{ name }}" at the cursor of the field last focused in the same tab
  // (the subject, or the body's editor, which puts a token there instead).
  var lastField = null;
  document.addEventListener("focusin", function (event) {
    if (event.target.matches("[data-placeholder-target]")) {
      lastField = event.target;
    }
  });

  function insertPlaceholder(button) {
    var pane = button.closest("[data-language-pane]");
    var field = lastField && pane && pane.contains(lastField) ? lastField : pane && pane.querySelector("[data-default-target]");
    if (!field) {
      return;
    }
    // A rich-text body (editor.js) inserts a token itself and says so by cancelling the event.
    var name = button.dataset.insertPlaceholder;
    var asked = new CustomEvent("insert-placeholder", { bubbles: true, cancelable: true, detail: { name: name } });
    if (!field.dispatchEvent(asked)) {
      return;
    }
    var text = "{{ " + name + " }}";
    var start = field.selectionStart == null ? field.value.length : field.selectionStart;
    var end = field.selectionEnd == null ? field.value.length : field.selectionEnd;
    field.value = field.value.slice(0, start) + text + field.value.slice(end);
    field.focus();
    field.selectionStart = field.selectionEnd = start + text.length;
    field.dispatchEvent(new Event("input", { bubbles: true }));
  }
})();
