from django.utils.translation import get_language

from messaging.subject_generator import SubjectTextGenerator


class LanguageSubject(SubjectTextGenerator):
    """A subject that says which language was active when it was made."""

    def get_subject_text(self) -> str:
        return f"{self.kwargs.get('prefix', 'Subject')} [{get_language()}]"


class RaisingSubject(SubjectTextGenerator):
    def get_subject_text(self) -> str:
        raise RuntimeError("subject generator exploded")


class FixedSubject(SubjectTextGenerator):
    def get_subject_text(self) -> str:
        return self.kwargs["text"]


SEND_ARGS = {"template_name": "tests/email.html", "template_context": {"title": "News"}}
