// Rich-text editor for the compose form's bodies: Tiptap (static/vendor/tiptap/tiptap.min.js,
// built by `npm run build:editor`) on every textarea[data-rich-text].
//
// Progressive enhancement: the textarea stays the form field. It is hidden once the editor is
// mounted and rewritten (followed by an `input` event, for the "uses default" badge and the
// unsaved-changes tracking) on every change; without JavaScript it is an ordinary textarea.
//
// What the editor writes must come back unchanged from the server's nh3 allow-list
// (messaging/forms.py sanitize_html): no class, style, data-* or target attributes, links with
// exactly href, title and the rel nh3 adds itself, no images. Placeholders are tokens in the
// editor and the plain text "{{ name }}" in the HTML.
(function () {
  "use strict";

  var T = window.MessagingTiptap;
  if (!T) {
    return; // no bundle: the plain textarea keeps working
  }

  var PLACEHOLDER_RE = /\{\{\s*([A-Za-z0-9_]+)\s*\}\}/g;
  var HTML_TAG_RE = /<\/?[a-zA-Z][^>]*>|<!--/;
  var SAFE_URL_RE = /^(https?:\/\/|mailto:)/i;
  var mounted = [];

  function placeholderText(name) {
    return "{{ " + name + " }}";
  }

  function isKnown(labels, name) {
    return Object.prototype.hasOwnProperty.call(labels, name);
  }

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  // The same rule as the server (forms.body_as_html): a blank line separates paragraphs, a single
  // line break stays a line break.
  function paragraphsFromPlainText(text) {
    return text
      .replace(/\r\n?/g, "\n")
      .split(/\n[ \t]*\n\s*/)
      .map(function (block) {
        return block.trim();
      })
      .filter(Boolean)
      .map(function (block) {
        return "<p>" + escapeHtml(block).replace(/\n/g, "<br>") + "</p>";
      })
      .join("");
  }

  // "{{ name }}" in the text of an HTML document becomes <span data-placeholder="name">, which
  // the Placeholder node parses into a token. Unknown names stay text (the server names them).
  function tokenizeTextNodes(root, labels) {
    var doc = root.ownerDocument;
    var walker = doc.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    var texts = [];
    while (walker.nextNode()) {
      if (walker.currentNode.nodeValue.indexOf("{{") !== -1) {
        texts.push(walker.currentNode);
      }
    }
    texts.forEach(function (textNode) {
      var value = textNode.nodeValue;
      var fragment = doc.createDocumentFragment();
      var last = 0;
      value.replace(PLACEHOLDER_RE, function (match, name, offset) {
        if (!isKnown(labels, name)) {
          return match;
        }
        fragment.appendChild(doc.createTextNode(value.slice(last, offset)));
        var token = doc.createElement("span");
        token.setAttribute("data-placeholder", name);
        fragment.appendChild(token);
        last = offset + match.length;
        return match;
      });
      if (last) {
        fragment.appendChild(doc.createTextNode(value.slice(last)));
        textNode.parentNode.replaceChild(fragment, textNode);
      }
    });
  }

  // HTML parsed in a document of its own, as ProseMirror does: nothing in it loads or runs.
  function parseHtml(html) {
    var doc = document.implementation.createHTMLDocument("");
    doc.body.innerHTML = html;
    return doc;
  }

  function initialContent(value, labels) {
    if (!value.trim()) {
      return "";
    }
    var doc = parseHtml(HTML_TAG_RE.test(value) ? withoutStyles(value) : paragraphsFromPlainText(value));
    tokenizeTextNodes(doc.body, labels);
    return doc.body.innerHTML;
  }

  // Pasted HTML ----------------------------------------------------------------------------------
  // The schema already drops what it does not know (classes, spans, Word's <o:p>). Style
  // attributes never reach a DOM: under this page's CSP the browser would refuse to apply them
  // (and log each refusal), so ProseMirror could not read bold or italic from them and would take
  // Google Docs' "not bold" <b> wrapper for bold. They are renamed before parsing and what they
  // mean is turned into elements: <strong>, <em>, <u>, <s>, Word's lists as <ul>/<ol>.

  var PASTE_STYLE = "data-paste-style";

  // Word's clipboard also carries a <style> element: dropped, like any style sheet.
  function withoutStyles(html) {
    return html
      .replace(/<style[\s>][\s\S]*?<\/style\s*>/gi, "")
      .replace(/(<[a-zA-Z][^>]*?\s)style(\s*=)/g, "$1" + PASTE_STYLE + "$2");
  }

  function declarations(element) {
    var result = {};
    (element.getAttribute(PASTE_STYLE) || "").split(";").forEach(function (declaration) {
      var colon = declaration.indexOf(":");
      if (colon > 0) {
        result[declaration.slice(0, colon).trim().toLowerCase()] = declaration.slice(colon + 1).trim().toLowerCase();
      }
    });
    return result;
  }

  function wrapContents(element, tagName) {
    var wrapper = element.ownerDocument.createElement(tagName);
    while (element.firstChild) {
      wrapper.appendChild(element.firstChild);
    }
    element.appendChild(wrapper);
  }

  function unwrap(element) {
    while (element.firstChild) {
      element.parentNode.insertBefore(element.firstChild, element);
    }
    element.remove();
  }

  function stylesToElements(body) {
    var undone = [];
    body.querySelectorAll("[" + PASTE_STYLE + "]").forEach(function (element) {
      var style = declarations(element);
      var tag = element.tagName.toLowerCase();
      var weight = style["font-weight"] || "";
      var fontStyle = style["font-style"] || "";
      var decoration = (style["text-decoration"] || "") + " " + (style["text-decoration-line"] || "");
      if (/^(bold|bolder|[6-9]00)$/.test(weight) && tag !== "b" && tag !== "strong") {
        wrapContents(element, "strong");
      } else if (/^(normal|lighter|[1-4]00)$/.test(weight) && (tag === "b" || tag === "strong")) {
        undone.push(element); // Google Docs wraps everything it copies in <b style="font-weight:normal">
      }
      if (/^(italic|oblique)/.test(fontStyle) && tag !== "i" && tag !== "em") {
        wrapContents(element, "em");
      } else if (fontStyle === "normal" && (tag === "i" || tag === "em")) {
        undone.push(element);
      }
      // A link's underline is the link's look, not formatting of its text.
      if (decoration.indexOf("underline") !== -1 && tag !== "u" && !element.closest("a")) {
        wrapContents(element, "u");
      }
      if (decoration.indexOf("line-through") !== -1 && tag !== "s") {
        wrapContents(element, "s");
      }
      element.removeAttribute(PASTE_STYLE);
    });
    undone.forEach(unwrap);
  }

  function wordListLevel(paragraph) {
    var match = /mso-list:\s*l\d+\s+level(\d+)/i.exec(paragraph.getAttribute(PASTE_STYLE) || "");
    return match ? parseInt(match[1], 10) : 0;
  }

  // Word writes a list as paragraphs with "mso-list: l0 level1" and the bullet or number as text
  // in a span marked mso-list:Ignore: back to <ul>/<ol>, nested by level.
  function wordListsToLists(body) {
    var doc = body.ownerDocument;
    var paragraphs = Array.prototype.filter.call(body.querySelectorAll("p"), wordListLevel);
    var done = new Set();
    paragraphs.forEach(function (first) {
      if (done.has(first)) {
        return;
      }
      var run = [];
      for (var node = first; node && wordListLevel(node); node = node.nextElementSibling) {
        run.push(node);
        done.add(node);
      }
      var stack = [];
      run.forEach(function (paragraph) {
        var level = wordListLevel(paragraph);
        var marker = paragraph.querySelector("[" + PASTE_STYLE + '*="mso-list:ignore" i]');
        var ordered = marker ? /^\s*\(?[0-9a-zA-Z]{1,4}[.)]/.test(marker.textContent) : false;
        if (marker) {
          marker.remove();
        }
        while (stack.length && stack[stack.length - 1].level > level) {
          stack.pop();
        }
        if (!stack.length || stack[stack.length - 1].level < level) {
          var list = doc.createElement(ordered ? "ol" : "ul");
          if (stack.length) {
            stack[stack.length - 1].list.lastElementChild.appendChild(list);
          } else {
            paragraph.parentNode.insertBefore(list, paragraph);
          }
          stack.push({ level: level, list: list });
        }
        var item = doc.createElement("li");
        var content = doc.createElement("p");
        while (paragraph.firstChild) {
          content.appendChild(paragraph.firstChild);
        }
        item.appendChild(content);
        stack[stack.length - 1].list.appendChild(item);
        paragraph.remove();
      });
    });
  }

  // A numbered heading from Word carries its number the same way, in a span marked
  // mso-list:Ignore and padded with non-breaking spaces: the number stays, as text, with one space.
  function wordHeadingNumbers(body) {
    var markers = body.querySelectorAll(
      ["h1", "h2", "h3", "h4", "h5", "h6"]
        .map(function (tag) {
          return tag + " [" + PASTE_STYLE + '*="mso-list:ignore" i]';
        })
        .join(",")
    );
    markers.forEach(function (marker) {
      var number = marker.textContent.replace(/[\s\u00a0]+/g, " ").trim();
      marker.replaceWith(body.ownerDocument.createTextNode(number ? number + " " : ""));
    });
  }

  function cleanPastedHtml(html, labels) {
    var body = parseHtml(withoutStyles(html)).body;
    wordListsToLists(body);
    wordHeadingNumbers(body);
    stylesToElements(body);
    // Word's and Google Docs' empty paragraphs (a non-breaking space, <o:p>) are spacing, which
    // paragraphs in an email already have.
    body.querySelectorAll("p").forEach(function (paragraph) {
      if (!paragraph.textContent.replace(/\u00a0/g, " ").trim() && !paragraph.querySelector("br")) {
        paragraph.remove();
      }
    });
    // Google Docs puts a <br> between blocks for each empty line, outside any paragraph.
    body.querySelectorAll("br").forEach(function (br) {
      if (br.parentElement === body) {
        br.remove();
      }
    });
    tokenizeTextNodes(body, labels);
    return body.innerHTML;
  }

  // Pasted plain text: a blank line separates paragraphs, a single line break is a line break,
  // "{{ name }}" becomes a token.
  function plainTextSlice(text, $context, view) {
    var schema = view.state.schema;
    if ($context.parent.type.spec.code) {
      return new T.Slice(T.Fragment.from(schema.text(text.replace(/\r\n?/g, "\n"))), 0, 0);
    }
    var doc = parseHtml(paragraphsFromPlainText(text));
    tokenizeTextNodes(doc.body, labelsOf(view.dom));
    return T.ProseMirrorDOMParser.fromSchema(schema).parseSlice(doc.body, {
      preserveWhitespace: true,
      context: $context,
    });
  }

  // Schema ---------------------------------------------------------------------------------------

  var Placeholder = T.Node.create({
    name: "placeholder",
    group: "inline",
    inline: true,
    atom: true,
    selectable: true,

    addOptions: function () {
      return { labels: {}, prefix: "" };
    },

    addAttributes: function () {
      return {
        name: {
          default: "",
          rendered: false,
          parseHTML: function (element) {
            return element.getAttribute("data-placeholder");
          },
        },
      };
    },

    parseHTML: function () {
      var labels = this.options.labels;
      return [
        {
          tag: "span[data-placeholder]",
          getAttrs: function (element) {
            return isKnown(labels, element.getAttribute("data-placeholder")) ? null : false;
          },
        },
      ];
    },

    // The span marks the token for copy and paste inside the editor; the body (bodyValue) keeps
    // only its text, which the server fills in per recipient.
    renderHTML: function (props) {
      return ["span", { "data-placeholder": props.node.attrs.name }, placeholderText(props.node.attrs.name)];
    },

    renderText: function (props) {
      return placeholderText(props.node.attrs.name);
    },

    addNodeView: function () {
      var options = this.options;
      return function (props) {
        var dom = document.createElement("span");
        dom.className = "placeholder-token";
        dom.contentEditable = "false";
        dom.dataset.placeholder = props.node.attrs.name;
        if (options.prefix) {
          var prefix = document.createElement("span");
          prefix.className = "visually-hidden";
          prefix.textContent = options.prefix + " ";
          dom.appendChild(prefix);
        }
        dom.appendChild(document.createTextNode(options.labels[props.node.attrs.name] || props.node.attrs.name));
        return { dom: dom };
      };
    },

    // "{{ recipient_name }}" typed by hand becomes a token when its braces close.
    addInputRules: function () {
      var labels = this.options.labels;
      var type = this.type;
      return [
        new T.InputRule({
          find: /\{\{\s*([A-Za-z0-9_]+)\s*\}\}$/,
          handler: function (props) {
            if (!isKnown(labels, props.match[1])) {
              return null;
            }
            props.state.tr.replaceWith(props.range.from, props.range.to, type.create({ name: props.match[1] }));
          },
        }),
      ];
    },
  });

  // Headings: two levels, "Heading" (h2: the subject is the email's title) and "Subheading" (h3).
  // Other levels, pasted or in a stored body, become the nearest of them: h1 an h2, h4-h6 an h3.
  var Heading = T.Heading.extend({
    parseHTML: function () {
      return [
        { tag: "h1", attrs: { level: 2 } },
        { tag: "h2", attrs: { level: 2 } },
        { tag: "h3", attrs: { level: 3 } },
        { tag: "h4", attrs: { level: 3 } },
        { tag: "h5", attrs: { level: 3 } },
        { tag: "h6", attrs: { level: 3 } },
      ];
    },
  });

  // No list type ("a", "i"): the allow-list keeps only <ol start>.
  var OrderedList = T.OrderedList.extend({
    addAttributes: function () {
      return { start: this.parent().start };
    },
  });

  // No language class on <code>.
  var CodeBlock = T.CodeBlock.extend({
    renderHTML: function () {
      return ["pre", ["code", 0]];
    },
  });

  var Link = T.Link.extend({
    addAttributes: function () {
      return {
        href: {
          default: null,
          parseHTML: function (element) {
            return element.getAttribute("href");
          },
        },
        title: { default: null },
      };
    },

    // In nh3's order, with the rel it adds to every link, so the server keeps it as it is.
    renderHTML: function (props) {
      var attributes = { href: props.HTMLAttributes.href };
      if (props.HTMLAttributes.title) {
        attributes.title = props.HTMLAttributes.title;
      }
      attributes.rel = "noopener noreferrer";
      return ["a", attributes, 0];
    },
  });

  function extensions(labels, prefix, openLinkForm) {
    return [
      T.StarterKit.configure({
        codeBlock: false,
        heading: false,
        link: false,
        orderedList: false,
        trailingNode: false, // it would add an empty paragraph after a closing list or quote
      }),
      Heading.configure({ levels: [2, 3] }),
      OrderedList,
      CodeBlock,
      Link.configure({
        openOnClick: false,
        autolink: true,
        linkOnPaste: true,
        defaultProtocol: "https",
        HTMLAttributes: { target: null, rel: null, class: null },
        isAllowedUri: function (url) {
          return SAFE_URL_RE.test(url || "");
        },
      }),
      Placeholder.configure({ labels: labels, prefix: prefix }),
      T.Extension.create({
        name: "linkShortcut",
        addKeyboardShortcuts: function () {
          return {
            "Mod-k": function () {
              openLinkForm();
              return true;
            },
          };
        },
      }),
    ];
  }

  // Toolbar --------------------------------------------------------------------------------------

  var COMMANDS = {
    bold: { run: (c) => c.toggleBold(), active: (e) => e.isActive("bold") },
    italic: { run: (c) => c.toggleItalic(), active: (e) => e.isActive("italic") },
    underline: { run: (c) => c.toggleUnderline(), active: (e) => e.isActive("underline") },
    strike: { run: (c) => c.toggleStrike(), active: (e) => e.isActive("strike") },
    "heading-2": { run: (c) => c.toggleHeading({ level: 2 }), active: (e) => e.isActive("heading", { level: 2 }) },
    "heading-3": { run: (c) => c.toggleHeading({ level: 3 }), active: (e) => e.isActive("heading", { level: 3 }) },
    "bullet-list": { run: (c) => c.toggleBulletList(), active: (e) => e.isActive("bulletList") },
    "ordered-list": { run: (c) => c.toggleOrderedList(), active: (e) => e.isActive("orderedList") },
    blockquote: { run: (c) => c.toggleBlockquote(), active: (e) => e.isActive("blockquote") },
    unlink: { run: (c) => c.extendMarkRange("link").unsetLink(), enabled: (e) => e.isActive("link") },
    undo: { run: (c) => c.undo(), enabled: (e) => e.can().undo() },
    redo: { run: (c) => c.redo(), enabled: (e) => e.can().redo() },
    clear: { run: (c) => c.unsetAllMarks().clearNodes() },
  };

  function updateToolbar(editor, toolbar) {
    toolbar.querySelectorAll("[data-editor-command]").forEach(function (button) {
      var command = COMMANDS[button.dataset.editorCommand];
      if (!command) {
        return;
      }
      if (command.active) {
        var active = command.active(editor);
        button.classList.toggle("active", active);
        button.setAttribute("aria-pressed", active ? "true" : "false");
      }
      if (command.enabled) {
        button.disabled = !command.enabled(editor);
      }
    });
    rovingTabStop(toolbar);
  }

  // One tab stop for the whole toolbar (WAI-ARIA toolbar pattern): Tab reaches the button used
  // last, arrow keys, Home and End move between the buttons.
  function toolbarButtons(toolbar) {
    return Array.prototype.filter.call(toolbar.querySelectorAll("button"), function (button) {
      return !button.disabled;
    });
  }

  function rovingTabStop(toolbar, current) {
    var buttons = toolbarButtons(toolbar);
    if (!current || buttons.indexOf(current) === -1) {
      current = toolbar.querySelector('button[tabindex="0"]:not(:disabled)') || buttons[0];
    }
    toolbar.querySelectorAll("button").forEach(function (button) {
      button.tabIndex = button === current ? 0 : -1;
    });
  }

  function handleToolbarKeys(event, toolbar) {
    var buttons = toolbarButtons(toolbar);
    var index = buttons.indexOf(document.activeElement);
    var next = null;
    if (event.key === "ArrowRight" || event.key === "ArrowDown") {
      next = buttons[(index + 1) % buttons.length];
    } else if (event.key === "ArrowLeft" || event.key === "ArrowUp") {
      next = buttons[(index - 1 + buttons.length) % buttons.length];
    } else if (event.key === "Home") {
      next = buttons[0];
    } else if (event.key === "End") {
      next = buttons[buttons.length - 1];
    }
    if (next) {
      event.preventDefault();
      rovingTabStop(toolbar, next);
      next.focus();
    }
  }

  // Link form ------------------------------------------------------------------------------------

  // What was typed as a link address: https:// added when there is no scheme, mailto: for an
  // email address; null unless it is an http(s) address with a host or a mailto: address.
  function linkAddress(value) {
    var url = value.trim();
    if (/^[^\s@/:]+@[^\s@/]+\.[^\s@/]+$/.test(url)) {
      url = "mailto:" + url;
    } else if (url && !/^[a-z][a-z0-9+.-]*:/i.test(url)) {
      url = "https://" + url;
    }
    if (/^mailto:[^\s@]+@[^\s@]+$/i.test(url)) {
      return url;
    }
    try {
      var parsed = new URL(url);
      return (parsed.protocol === "http:" || parsed.protocol === "https:") && parsed.hostname ? url : null;
    } catch (error) {
      return null;
    }
  }

  function linkForm(wrapper, editor) {
    var form = wrapper.querySelector("[data-link-form]");
    var input = form.querySelector("[data-link-url]");
    var error = form.querySelector("[data-link-error]");
    var button = wrapper.querySelector('[data-editor-command="link"]');

    function showError(shown) {
      error.hidden = !shown;
      input.classList.toggle("is-invalid", shown);
      if (shown) {
        input.setAttribute("aria-invalid", "true");
      } else {
        input.removeAttribute("aria-invalid");
      }
    }

    function close(refocus) {
      form.hidden = true;
      button.setAttribute("aria-expanded", "false");
      showError(false);
      if (refocus) {
        editor.commands.focus();
        editor.view.focus(); // now, not on the next frame (see the toolbar's click handler)
      }
    }

    function open() {
      input.value = editor.getAttributes("link").href || "";
      showError(false);
      form.hidden = false;
      button.setAttribute("aria-expanded", "true");
      input.focus();
      input.select();
    }

    function apply() {
      var href = linkAddress(input.value);
      if (!href) {
        showError(true);
        input.focus();
        return;
      }
      var chain = editor.chain().focus();
      if (editor.state.selection.empty && !editor.isActive("link")) {
        var text = href.replace(/^mailto:/i, "");
        chain.insertContent({ type: "text", text: text, marks: [{ type: "link", attrs: { href: href } }] }).run();
      } else {
        chain.extendMarkRange("link").setLink({ href: href }).run();
      }
      close(false);
      editor.view.focus(); // now: the form (and its focused field) just disappeared
    }

    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault(); // never submits the compose form
        apply();
      } else if (event.key === "Escape") {
        event.preventDefault();
        close(true);
      }
    });
    form.querySelector("[data-link-apply]").addEventListener("click", apply);
    form.querySelector("[data-link-cancel]").addEventListener("click", function () {
      close(true);
    });
    return { open: open, close: close, isOpen: () => !form.hidden };
  }

  // Mounting -------------------------------------------------------------------------------------

  function labelsOf(element) {
    var scope = element.closest("[data-language-pane]") || document;
    var labels = {};
    scope.querySelectorAll("[data-insert-placeholder]").forEach(function (button) {
      labels[button.dataset.insertPlaceholder] = button.textContent.trim();
    });
    return labels;
  }

  // The editor's HTML as the form field holds it: placeholders as the plain text "{{ name }}",
  // nothing at all for an empty editor.
  function bodyValue(editor) {
    if (!editor.getText().trim()) {
      return "";
    }
    var body = parseHtml(editor.getHTML()).body;
    body.querySelectorAll("span[data-placeholder]").forEach(function (token) {
      token.replaceWith(token.textContent);
    });
    return body.innerHTML;
  }

  function mount(textarea) {
    var wrapper = document.querySelector('[data-rich-text-for="' + textarea.id + '"]');
    var mountPoint = wrapper && wrapper.querySelector("[data-editor-mount]");
    if (!mountPoint) {
      return;
    }
    // A table (kept by the allow-list, written by hand or by a client) has no place in the
    // editor's schema: such a body stays in the textarea rather than lose its table on a change.
    if (parseHtml(withoutStyles(textarea.value)).querySelector("table")) {
      var note = document.querySelector('[data-rich-text-unsupported="' + textarea.id + '"]');
      if (note) {
        note.hidden = false;
      }
      return;
    }
    var toolbar = wrapper.querySelector('[role="toolbar"]');
    var labels = labelsOf(textarea);
    var invalid = textarea.classList.contains("is-invalid");
    var attributes = {
      id: textarea.id + "-editor",
      class: "form-control rich-text-editor" + (invalid ? " is-invalid" : ""),
      "aria-multiline": "true",
      "aria-labelledby": textarea.id + "-label",
      "data-placeholder-target": "",
      "data-default-target": "",
    };
    if (textarea.getAttribute("aria-describedby")) {
      attributes["aria-describedby"] = textarea.getAttribute("aria-describedby");
    }
    if (invalid) {
      attributes["aria-invalid"] = "true";
    }
    var link = null;
    var editor = new T.Editor({
      element: mountPoint,
      injectCSS: false, // editor.css: the CSP allows no injected <style>
      content: initialContent(textarea.value, labels),
      extensions: extensions(labels, mountPoint.dataset.tokenPrefix || "", function () {
        link.open();
      }),
      editorProps: {
        attributes: attributes,
        transformPastedHTML: function (html) {
          return cleanPastedHtml(html, labels);
        },
        clipboardTextParser: function (text, $context, plain, view) {
          return plainTextSlice(text, $context, view);
        },
      },
    });
    link = linkForm(wrapper, editor);

    // Only a change rewrites the field: a body opened and saved untouched stays as it was.
    editor.on("update", function () {
      textarea.value = bodyValue(editor);
      textarea.dispatchEvent(new Event("input", { bubbles: true }));
    });
    editor.on("transaction", function () {
      updateToolbar(editor, toolbar);
    });

    toolbar.addEventListener("click", function (event) {
      var button = event.target.closest("[data-editor-command]");
      if (!button || button.disabled) {
        return;
      }
      rovingTabStop(toolbar, button);
      var name = button.dataset.editorCommand;
      if (name === "link") {
        if (link.isOpen()) {
          link.close(true);
        } else {
          link.open();
        }
        return;
      }
      COMMANDS[name].run(editor.chain().focus()).run();
      // Tiptap's focus() waits for the next frame; keys typed right after the click belong in
      // the editor, not on the button.
      editor.view.focus();
    });
    toolbar.addEventListener("keydown", function (event) {
      handleToolbarKeys(event, toolbar);
    });

    // Placeholder buttons (app.js) ask the field focused last; this one answers with a token.
    editor.view.dom.addEventListener("insert-placeholder", function (event) {
      if (!isKnown(labels, event.detail.name)) {
        return;
      }
      event.preventDefault();
      editor.chain().focus().insertContent({ type: "placeholder", attrs: { name: event.detail.name } }).run();
      editor.view.focus();
    });
    // The label points at the hidden textarea; a click on it goes to the editor instead.
    var label = document.getElementById(textarea.id + "-label");
    if (label) {
      label.addEventListener("click", function (event) {
        event.preventDefault();
        editor.commands.focus();
      });
    }

    textarea.removeAttribute("data-placeholder-target");
    textarea.removeAttribute("data-default-target");
    textarea.hidden = true;
    wrapper.hidden = false;
    updateToolbar(editor, toolbar);
    mounted.push({ editor: editor, textarea: textarea });
  }

  function mountAll(root) {
    // Editors of a form htmx replaced are gone from the page: free them.
    mounted = mounted.filter(function (entry) {
      if (entry.textarea.isConnected) {
        return true;
      }
      entry.editor.destroy();
      return false;
    });
    root.querySelectorAll("textarea[data-rich-text]").forEach(function (textarea) {
      if (!textarea.dataset.editorMounted) {
        textarea.dataset.editorMounted = "true";
        mount(textarea);
      }
    });
  }

  mountAll(document);
  document.addEventListener("htmx:load", function (event) {
    mountAll(event.detail.elt.querySelectorAll ? event.detail.elt : document);
  });
})();
