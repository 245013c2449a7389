"""The message every contender sends: en and nb content with the recipient's name in it."""

EN_BODY = (
    "<h1>Deadline moved</h1>"
    "<p>Hello {{ recipient_name }},</p>"
    "<p>The deadline for <strong>Assignment 3: Distributed systems</strong> has been moved to "
    "Friday 14 March at 23:59. Your examiners have been told, and your group keeps its current "
    "members. If you already delivered, nothing changes for you.</p>"
    "<ul><li>New deadline: Friday 14 March, 23:59</li><li>Course: INF3200</li>"
    "<li>Questions: ask your teaching assistant</li></ul>"
    '<p>See the assignment at <a href="https://devilry.example.org/assignment/3">the course page</a>. '
    "This is a long line of text that goes on for a while so that the plain text version has at least "
    "one line longer than seventy-eight characters, as real messages do.</p>"
    "<p>Best regards,<br>The course staff</p>"
)
NB_BODY = (
    "<h1>Fristen er flyttet</h1>"
    "<p>Hei {{ recipient_name }},</p>"
    "<p>Fristen for <strong>Oppgave 3: Distribuerte systemer</strong> er flyttet til fredag 14. mars "
    "kl. 23.59. Sensorene dine er varslet, og gruppen din beholder de samme medlemmene. Har du "
    "allerede levert, endres ingenting for deg. Blåbærsyltetøy, ærlig og øyeblikkelig.</p>"
    "<ul><li>Ny frist: fredag 14. mars, 23.59</li><li>Emne: INF3200</li>"
    "<li>Spørsmål: kontakt gruppelæreren din</li></ul>"
    '<p>Se oppgaven på <a href="https://devilry.example.org/assignment/3">emnesiden</a>. '
    "Dette er en lang linje med tekst som fortsetter en stund, slik at ren tekst-versjonen har minst "
    "én linje som er lengre enn syttiåtte tegn, slik ekte meldinger har.</p>"
    "<p>Vennlig hilsen<br>Emneansvarlige</p>"
)
CONTENT = {
    "en": {"subject": "Deadline moved for {{ recipient_first_name }}", "body": EN_BODY},
    "nb": {"subject": "Påminnelse: frist æøå for {{ recipient_first_name }}", "body": NB_BODY},
}
