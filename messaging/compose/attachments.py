"""Files attached to a composed message.

Checked before anything is stored (size, total, count, type by extension, the optional scanner),
stored under a random name (models.attachment_upload_to), shown to recipients under a cleaned
name, sent with every receiver's email, and removed from storage when their row is deleted (with
its draft, or its message by retention) once the deletion is committed.

Sending reads each file once per process: its MIME part (base64-encoded once, and serialized
once: fast_email.PreparedPart) is kept in a small cache with a byte budget and attached as it is
to every receiver's email, so a large file costs a copy of bytes per receiver, not an encoding.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import logging
import mimetypes
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.policy import default as default_policy

from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from messaging import conf
from messaging.engine.channels.fast_email import PreparedPart
from messaging.models import Message, MessageAttachment, attachment_upload_to

logger = logging.getLogger(__name__)

# What recipients see is at most this many characters (the extension is kept when trimming).
FILENAME_MAX_LENGTH = 100
FALLBACK_STEM = "attachment"
# Longer "extensions" are part of the name (a.this-is-not-an-extension).
EXTENSION_MAX_LENGTH = 10
# Characters Windows refuses in file names (and path separators everywhere).
UNSAFE_CHARACTERS = frozenset('<>:"/\\|?*')
WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(10)), *(f"LPT{n}" for n in range(10))}
)
# The type recipients' mail programs open a file with: from its extension, never from the browser.
CONTENT_TYPES = {
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".csv": "text/csv",
    ".ics": "text/calendar",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xls": "application/vnd.ms-excel",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".ppt": "application/vnd.ms-powerpoint",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
    ".odp": "application/vnd.oasis.opendocument.presentation",
    ".zip": "application/zip",
}
FALLBACK_CONTENT_TYPE = "application/octet-stream"
# Raw bytes per base64 line group: 57 bytes make one 76-character line.
ENCODE_CHUNK_BYTES = 57 * 1024
# Encoded MIME parts kept per process (the newest is kept even when larger).
PART_CACHE_BYTES = 64 * 1024 * 1024


class NotADraft(ValueError):
    """Only a draft's attachments can change; the message left `draft` (or is gone)."""


class LimitReached(ValidationError):
    """Another save took the message past a limit after this one's files were checked."""


# Names -------------------------------------------------------------------------------------------


def clean_filename(name: str) -> str:
    """The name recipients see: the last path component only, NFC, without control, format
    (bidi overrides, zero-width) or separator characters, no leading or trailing dots or spaces,
    at most FILENAME_MAX_LENGTH characters with the extension kept; FALLBACK_STEM when nothing
    is left of the name itself."""
    name = unicodedata.normalize("NFC", str(name))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = []
    for char in name:
        category = unicodedata.category(char)
        if category[0] == "C" or category in ("Zl", "Zp"):
            continue
        kept.append(" " if category == "Zs" else "_" if char in UNSAFE_CHARACTERS else char)
    name = " ".join("".join(kept).split())
    stem, extension = split_extension(name)
    stem = stem.strip(" .")
    if stem.upper() in WINDOWS_RESERVED:
        stem = f"_{stem}"
    stem = stem[: FILENAME_MAX_LENGTH - len(extension)].rstrip(" .") or FALLBACK_STEM
    return unicodedata.normalize("NFC", stem + extension)


def split_extension(name: str) -> tuple[str, str]:
    """("report", ".pdf") for "report.PDF"; a name that is only an extension (".pdf") has an
    empty stem."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not extension or len(extension) > EXTENSION_MAX_LENGTH or not extension.isalnum():
        return name, ""
    return stem, f".{extension.lower()}"


def content_type_for(filename: str) -> str:
    extension = split_extension(filename)[1]
    if extension in CONTENT_TYPES:
        return CONTENT_TYPES[extension]
    return mimetypes.guess_type(f"x{extension}", strict=True)[0] or FALLBACK_CONTENT_TYPE


# Checking uploads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """An uploaded file that passed every check, with what its row will hold."""

    file: UploadedFile
    filename: str
    content_type: str
    size: int
    sha256: str


def limits_text() -> str:
    """The limits, as the compose form's help text states them."""
    return _("Up to %(count)d files, each at most %(size)s, %(total)s in all. Allowed types: %(types)s.") % {
        "count": conf.attachments_max_count(),
        "size": filesizeformat(conf.attachment_max_bytes()),
        "total": filesizeformat(conf.attachments_max_total_bytes()),
        "types": ", ".join(conf.attachment_extensions()),
    }


def check_uploads(files: Sequence[UploadedFile], kept: Sequence[MessageAttachment]) -> list[Upload]:
    """Every problem with `files` (added to the `kept` attachments) as one ValidationError, or
    the uploads ready to store. Each file is read once (its hash and real size), then scanned."""
    if not files:
        return []
    problems: list[ValidationError] = []
    most = conf.attachments_max_count()
    if len(kept) + len(files) > most:
        problems.append(
            ValidationError(
                _("At most %(most)d files can be attached; this would make %(count)d."),
                code="too_many",
                params={"most": most, "count": len(kept) + len(files)},
            )
        )
    uploads = []
    for file in files:
        upload, refusals = _check_one(file)
        problems += refusals
        if upload is not None:
            uploads.append(upload)
    total = sum(a.size for a in kept) + sum(int(getattr(f, "size", 0) or 0) for f in files)
    if total > conf.attachments_max_total_bytes():
        problems.append(
            ValidationError(
                _("The attachments would take %(total)s; at most %(most)s are allowed per message."),
                code="too_large_in_total",
                params={
                    "total": filesizeformat(total),
                    "most": filesizeformat(conf.attachments_max_total_bytes()),
                },
            )
        )
    if problems:
        raise ValidationError(problems)
    for upload in uploads:
        scan(upload)
    return uploads


def _check_one(file: UploadedFile) -> tuple[Upload | None, list[ValidationError]]:
    filename = clean_filename(getattr(file, "name", "") or "")
    extension = split_extension(filename)[1]
    allowed = conf.attachment_extensions()
    if extension not in allowed:
        refusal = ValidationError(
            _("%(name)s: files of this type cannot be attached (allowed: %(types)s)."),
            code="forbidden_type",
            params={"name": filename, "types": ", ".join(allowed)},
        )
        return None, [refusal]
    declared = int(getattr(file, "size", 0) or 0)
    if declared > conf.attachment_max_bytes():
        return None, [_too_large(filename, declared)]
    size, digest = _measure(file)
    if not size:
        return None, [ValidationError(_("%(name)s is empty."), code="empty", params={"name": filename})]
    if size > conf.attachment_max_bytes():
        return None, [_too_large(filename, size)]
    return Upload(file, filename, content_type_for(filename), size, digest), []


def _too_large(filename: str, size: int) -> ValidationError:
    return ValidationError(
        _("%(name)s is %(size)s; each file may be at most %(most)s."),
        code="too_large",
        params={
            "name": filename,
            "size": filesizeformat(size),
            "most": filesizeformat(conf.attachment_max_bytes()),
        },
    )


def _measure(file) -> tuple[int, str]:
    """The real size and SHA-256 of `file`, read in chunks (never whole into memory)."""
    digest, size = hashlib.sha256(), 0
    file.seek(0)
    for chunk in file.chunks():
        digest.update(chunk)
        size += len(chunk)
    file.seek(0)
    return size, digest.hexdigest()


def scan(upload: Upload) -> None:
    """MESSAGING_ATTACHMENT_SCANNER, if set: a dotted path to a callable(uploaded_file) that
    raises ValidationError to refuse the file (a virus scanner). The file is at its start."""
    path = conf.attachment_scanner()
    if not path:
        return
    upload.file.seek(0)
    try:
        import_string(path)(upload.file)
    except ValidationError as refused:
        raise ValidationError(
            _("%(name)s was refused: %(reason)s"),
            code="refused_by_scanner",
            params={"name": upload.filename, "reason": " ".join(refused.messages)},
        ) from refused
    finally:
        upload.file.seek(0)


# Changing a draft's attachments ----------------------------------------------------------------


def update(
    message: Message, uploads: Sequence[Upload], remove_ids: Iterable[int] = ()
) -> list[MessageAttachment]:
    """Remove the attachments `remove_ids` and store `uploads` on a draft, in one transaction;
    the limits are checked again against what is stored now (another save may have come first).
    Raises NotADraft or LimitReached, and then nothing is stored or removed."""
    remove_ids = set(remove_ids)
    with transaction.atomic():
        _lock_draft(message)
        kept = [a for a in message.attachments.all() if a.pk not in remove_ids]
        _check_limits(kept, uploads)
        if remove_ids:
            for attachment in message.attachments.filter(pk__in=remove_ids):
                attachment.delete()  # its file goes once this commits (on_attachment_deleted)
        return _store(message, uploads)


def add(message: Message, files: Sequence[UploadedFile]) -> list[MessageAttachment]:
    """Check `files` against the draft's attachments and store them (all, or none)."""
    if message.pk is None or not message.is_draft:
        raise NotADraft(f"Message #{message.pk} is not a draft; its attachments cannot change.")
    return update(message, check_uploads(files, list(message.attachments.all())))


def remove(attachment: MessageAttachment) -> None:
    """Remove one attachment of a draft (its file goes once this commits)."""
    update(attachment.message, [], remove_ids=[attachment.pk])


def copy_all(source: Message, target: Message) -> list[MessageAttachment]:
    """Give `target` its own copy of each of `source`'s files (a duplicated draft), so that
    deleting one message never removes the other's file. A file gone from storage is left out
    (the new draft lists what it has)."""
    copies, stored = [], []
    try:
        for attachment in source.attachments.all():
            try:
                content = attachment.file.open("rb")
            except OSError:
                logger.warning("Attachment %s has no stored file; not copied.", attachment.pk, exc_info=True)
                continue
            with content:
                name = attachment.file.storage.save(
                    attachment_upload_to(attachment, attachment.filename), content
                )
            stored.append(name)
            copies.append(
                MessageAttachment(
                    message=target,
                    file=name,
                    filename=attachment.filename,
                    content_type=attachment.content_type,
                    size=attachment.size,
                    sha256=attachment.sha256,
                )
            )
        return MessageAttachment.objects.bulk_create(copies)
    except BaseException:
        _delete_files(stored)
        raise


def _lock_draft(message: Message) -> None:
    locked = Message.objects.drafts().select_for_update().filter(pk=message.pk).values_list("pk", flat=True)
    if message.pk is None or not list(locked):
        raise NotADraft(f"Message #{message.pk} is not a draft; its attachments cannot change.")


def _check_limits(kept: Sequence[MessageAttachment], uploads: Sequence[Upload]) -> None:
    if not uploads:
        return
    if len(kept) + len(uploads) > conf.attachments_max_count():
        raise LimitReached(
            _("At most %(most)d files can be attached; this would make %(count)d."),
            code="too_many",
            params={"most": conf.attachments_max_count(), "count": len(kept) + len(uploads)},
        )
    total = sum(a.size for a in kept) + sum(u.size for u in uploads)
    if total > conf.attachments_max_total_bytes():
        raise LimitReached(
            _("The attachments would take %(total)s; at most %(most)s are allowed per message."),
            code="too_large_in_total",
            params={
                "total": filesizeformat(total),
                "most": filesizeformat(conf.attachments_max_total_bytes()),
            },
        )


def _store(message: Message, uploads: Sequence[Upload]) -> list[MessageAttachment]:
    """Write each file to storage and its row; a failure removes the files written so far (the
    rows go with the transaction)."""
    created, stored = [], []
    try:
        for upload in uploads:
            attachment = MessageAttachment(
                message=message,
                filename=upload.filename,
                content_type=upload.content_type,
                size=upload.size,
                sha256=upload.sha256,
            )
            upload.file.seek(0)
            attachment.file.save(upload.filename, upload.file, save=False)
            stored.append(attachment.file.name)
            attachment.save()
            created.append(attachment)
    except BaseException:
        _delete_files(stored)
        raise
    return created


def on_attachment_deleted(sender, instance: MessageAttachment, using: str, **kwargs) -> None:
    """post_delete: the stored file goes when the deletion is committed (never before: a
    rolled-back deletion keeps its file)."""
    name = instance.file.name
    if name:
        transaction.on_commit(lambda: _delete_files([name]), using=using)


def _delete_files(names: Iterable[str]) -> None:
    storage = MessageAttachment._meta.get_field("file").storage
    for name in names:
        try:
            storage.delete(name)
        except OSError:
            logger.warning("Could not delete the attachment file %s.", name, exc_info=True)


# Sending -----------------------------------------------------------------------------------------


class AttachmentUnavailable(Exception):
    """A stored file is missing or no longer matches its checksum: nothing can be sent with it."""


def email_parts(message_id: int) -> list[PreparedPart]:
    """The MIME parts of a message's attachments, ready to attach to any number of emails
    (one query; each file read once per process, see PartCache)."""
    rows = list(
        MessageAttachment.objects.filter(message_id=message_id)
        .order_by("id")
        .values_list("id", "file", "filename", "content_type", "sha256")
    )
    return [part_cache.get(row) for row in rows]


class PartCache:
    """Parts by (id, stored name, filename, type, sha256), least recently used dropped first
    once they take more than `budget` bytes (the newest part is always kept). Shared by the
    delivery lanes (threads) of a worker."""

    def __init__(self, budget: int = PART_CACHE_BYTES):
        self.budget = budget
        self._parts: OrderedDict[tuple, tuple[PreparedPart, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> PreparedPart:
        with self._lock:
            if key in self._parts:
                self._parts.move_to_end(key)
                return self._parts[key][0]
            part, size = load_part(*key)
            self._parts[key] = (part, size)
            while len(self._parts) > 1 and sum(s for _p, s in self._parts.values()) > self.budget:
                self._parts.popitem(last=False)
            return part

    def clear(self) -> None:
        with self._lock:
            self._parts.clear()


part_cache = PartCache()


def load_part(
    attachment_id: int, name: str, filename: str, content_type: str, sha256: str
) -> tuple[PreparedPart, int]:
    """The attachment's MIME part (base64, Content-Disposition: attachment; filename in RFC 2231
    form when not ASCII) and the memory it will take (its base64 text and one serialization),
    encoded chunk by chunk while its SHA-256 is checked."""
    storage = MessageAttachment._meta.get_field("file").storage
    maintype, _slash, subtype = content_type.partition("/")
    digest, lines = hashlib.sha256(), []
    # A text file is labelled UTF-8 when it is valid UTF-8; in another charset, it goes without.
    utf8 = codecs.getincrementaldecoder("utf-8")() if maintype == "text" else None
    try:
        with storage.open(name, "rb") as stored:
            while chunk := stored.read(ENCODE_CHUNK_BYTES):
                digest.update(chunk)
                lines.append(base64.encodebytes(chunk).decode("ascii"))
                utf8 = _decodes(utf8, chunk)
    except OSError as exc:
        raise AttachmentUnavailable(
            _("The attachment %(name)s cannot be read: %(error)s") % {"name": filename, "error": exc}
        ) from exc
    if digest.hexdigest() != sha256:
        raise AttachmentUnavailable(
            _("The stored file of the attachment %(name)s has changed since it was attached.")
            % {"name": filename}
        )
    part = PreparedPart(policy=default_policy)
    params = {"charset": "utf-8"} if _decodes(utf8, b"", final=True) else None
    part.set_content(
        b"",
        maintype or "application",
        subtype or "octet-stream",
        disposition="attachment",
        filename=filename,
        params=params,
    )
    payload = "".join(lines)
    part.set_payload(payload)
    return part, 2 * len(payload)


def _decodes(decoder, chunk: bytes, final: bool = False):
    """The decoder while the bytes so far are valid UTF-8, else None."""
    if decoder is None:
        return None
    try:
        decoder.decode(chunk, final=final)
    except UnicodeDecodeError:
        return None
    return decoder
