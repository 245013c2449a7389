"""Message templates in the staff UI: list, create, edit and delete them, save a message as one,
and start a new draft from one (a copy: the draft does not change when the template does)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_tables2 import RequestConfig

from messaging.compose import message_templates
from messaging.compose.forms import SaveAsTemplateForm, StartFromTemplateForm, TemplateForm
from messaging.engine import rendering
from messaging.models import MessageTemplate
from messaging.staff_pages import COMPOSE, edit_url, redirect_to, render_page, staff_permission_required
from messaging.tracking import selectors
from messaging.tracking.filters import TemplateFilter
from messaging.tracking.tables import TemplateTable

TEMPLATES_PER_PAGE = 50


def _list_url() -> str:
    return reverse("messaging:template_list")


def _get_template(pk: int) -> MessageTemplate:
    return get_object_or_404(MessageTemplate, pk=pk)


def _form_context(form: TemplateForm, template: MessageTemplate | None) -> dict:
    return {
        "form": form,
        "template": template,
        "placeholders": [(name, label) for name, (label, _fill) in rendering.PLACEHOLDERS.items()],
        "default_language": settings.LANGUAGE_CODE,
    }


def _template_form(request: HttpRequest, template: MessageTemplate | None) -> HttpResponse:
    form = TemplateForm(request.POST or None, template=template)
    if request.method == "POST" and form.is_valid():
        try:
            saved = form.save(request.user)
        except message_templates.NameTaken:
            form.name_taken()
            if template is not None:
                template.refresh_from_db()  # the page's heading names it as it is saved
        else:
            messages.success(request, _("Template “%(name)s” saved.") % {"name": saved.name})
            return redirect_to(request, reverse("messaging:template_edit", args=[saved.pk]))
    return render_page(request, "messaging/compose/template_form.html", _form_context(form, template))


@staff_permission_required(COMPOSE)
@require_GET
def template_list(request: HttpRequest) -> HttpResponse:
    found = TemplateFilter(request.GET, queryset=MessageTemplate.objects.select_related("created_by"))
    table = TemplateTable(found.qs, csrf_token=get_token(request))
    RequestConfig(request, paginate={"per_page": TEMPLATES_PER_PAGE}).configure(table)
    context = {"filter": found, "table": table}
    return render_page(request, "messaging/compose/template_list.html", context, "results")


@staff_permission_required(COMPOSE)
@require_http_methods(["GET", "POST"])
def template_create(request: HttpRequest) -> HttpResponse:
    return _template_form(request, None)


@staff_permission_required(COMPOSE)
@require_http_methods(["GET", "POST"])
def template_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _template_form(request, _get_template(pk))


@staff_permission_required(COMPOSE)
@require_http_methods(["GET", "POST"])
def template_delete(request: HttpRequest, pk: int) -> HttpResponse:
    template = _get_template(pk)
    if request.method == "POST":
        message_templates.delete_template(template)
        messages.success(request, _("Template “%(name)s” deleted.") % {"name": template.name})
        return redirect_to(request, _list_url())
    return render_page(request, "messaging/compose/template_delete.html", {"template": template})


@staff_permission_required(COMPOSE)
@require_POST
def template_start(request: HttpRequest) -> HttpResponse:
    """A new draft from the chosen template; its edit page, where recipients are chosen."""
    form = StartFromTemplateForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(form.errors.get("template", [_("Choose a template.")])))
        return redirect_to(request, reverse("messaging:message_create"))
    template = form.cleaned_data["template"]
    draft = message_templates.start_draft(template, actor=request.user)
    messages.success(
        request,
        _("A new draft was made from the template “%(name)s”. Choose its recipients, then save.")
        % {"name": template.name},
    )
    return redirect_to(request, edit_url(draft))


@staff_permission_required(COMPOSE)
@require_http_methods(["GET", "POST"])
def message_save_as_template(request: HttpRequest, pk: int) -> HttpResponse:
    """Name a new template made from a copy of the message's saved content."""
    message = selectors.get_message(pk)
    back = edit_url(message) if message.is_editable else reverse("messaging:message_status", args=[pk])
    if not message.composed_content:
        messages.info(request, _("This message has no written content to save as a template."))
        return redirect_to(request, back)
    form = SaveAsTemplateForm(request.POST or None, message=message)
    if request.method == "POST" and form.is_valid():
        try:
            template = message_templates.save_as_template(message, form.cleaned_data["name"], request.user)
        except message_templates.NameTaken:
            form.name_taken()
        else:
            messages.success(request, _("Saved as the template “%(name)s”.") % {"name": template.name})
            return redirect_to(request, back)
    context = {
        "form": form,
        "message": message,
        "back": back,
        "languages": message_templates.content_languages(message.composed_content),
    }
    return render_page(request, "messaging/compose/template_save_as.html", context)
