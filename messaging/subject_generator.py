from django.utils.translation import get_language


class SubjectTextGenerator:
    """Makes a message's subject in the active language.

    The engine activates each receiver's language before it calls `get_subject_text()`;
    subclasses return the subject for that language, usually with `gettext`.
    """

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def get_subject_text(self) -> str:
        raise NotImplementedError("Subclasses of SubjectTextGenerator must implement get_subject_text().")


class ComposedSubjectGenerator(SubjectTextGenerator):
    """The subject staff wrote per language, falling back to the default language."""

    def __init__(self, subjects: dict[str, str], default_language: str, **kwargs):
        super().__init__(**kwargs)
        self.subjects = subjects
        self.default_language = default_language

    def get_subject_text(self) -> str:
        return self.subjects.get(get_language()) or self.subjects[self.default_language]
