// The rich-text editor bundle: Tiptap (MIT) as one IIFE, static/vendor/tiptap/tiptap.min.js,
// exposing window.MessagingTiptap for static/messaging/editor.js. Rebuild: npm run build:editor.
// Only what editor.js uses is exported; esbuild leaves out everything else.
import { Editor, Extension, InputRule, Node } from "@tiptap/core";
import { CodeBlock } from "@tiptap/extension-code-block";
import { Heading } from "@tiptap/extension-heading";
import { Link } from "@tiptap/extension-link";
import { OrderedList } from "@tiptap/extension-list";
import { DOMParser, Fragment, Slice } from "@tiptap/pm/model";
import { StarterKit } from "@tiptap/starter-kit";

window.MessagingTiptap = {
  Editor,
  Extension,
  InputRule,
  Node,
  StarterKit,
  CodeBlock,
  Heading,
  Link,
  OrderedList,
  ProseMirrorDOMParser: DOMParser,
  Fragment,
  Slice,
};
