from django.apps import AppConfig


class FastPatchConfig(AppConfig):
    name = "tests.benchmarks.fastpatch"
    label = "bench_fastpatch"

    def ready(self) -> None:
        from messaging.channels import email
        from messaging.channels.fast_email import FastEmailMultiAlternatives

        email.EmailMultiAlternatives = FastEmailMultiAlternatives
