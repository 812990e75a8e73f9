"""Plugin ``sms_spam``: the SMS Spam Collection (5,574 labelled text messages)."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.dataset("sms_spam", "fusionjax_plugins.sms_spam.dataset:SmsSpamDataset",
                      summary="SMS Spam Collection: text messages labelled ham or spam")
