"""Words, names and base counts of the generated data (German-speaking repair shops, as in the real app)."""

from __future__ import annotations

from handyshop_migration.devtools.seed.copy_text import _e, _euro

# --------------------------------------------------------------------------------------------------
# Value pools (German/Austrian phone-repair shops; umlauts, emoji and COPY-special characters on purpose)
# --------------------------------------------------------------------------------------------------

_SHOP_NAMES = (
    'Handy-Doktor "Express"',
    "O'Brien's Phone Repair",
    "Smartphone-Klinik Müller & Söhne",
    "Handyshop Österreich GmbH",
    "Display-Profi Graz",
    "Reparaturstüberl Größing",
    "iRepair Salzburg",
    "Phone Care Innsbruck",
    "Café & Handy 📱 Villach",
    "Handy-Ärzte Mödling",
    "Zur schnellen Reparatur – Linz",
    "TechFix Wien-Ottakring",
)
_FIRST = (
    "Jürgen", "Max", "Anna", "Sophie", "Lukas", "Özlem", "Mehmet", "Zoë", "Björn", "Käthe", "Lena", "Jonas",
    "Marie", "Ahmet", "Ana", "Dragan", "Željko", "Fatma", "Élodie", "Paul", "Sarah", "Thomas", "Katarina",
    "Stefan", "Günther", "Jörg", "Hannah", "Florian",
)
_LAST = (
    "Müller", "Schröder", "Weiß", "Gruber", "Huber", "Yılmaz", "Kovačević", "Öztürk", "Bauer", "Wagner",
    "Pichler", "Steiner", "Mayer", "Hofer", "Fuchs", "Nováková", "Lindström", "Brandstätter", "Kößler",
    "O'Connor", "Moser", "Leitner",
)
_EMOJI = ("😊", "📱", "🌸", "🔧", "⭐", "🙈", "😭", "👍")
_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "é": "e",
                       "É": "E", "ë": "e", "ı": "i", "č": "c", "Ž": "Z", "ž": "z", "á": "a", "'": ""})
_MAIL_DOMAINS = ("gmx.at", "gmail.com", "aon.at", "chello.at", "hotmail.com", "a1.net", "web.de")
_CITIES = (
    ("1010", "Wien"), ("1160", "Wien"), ("1210", "Wien"), ("8010", "Graz"), ("4020", "Linz"), ("5020", "Salzburg"),
    ("6020", "Innsbruck"), ("9020", "Klagenfurt"), ("9500", "Villach"), ("4600", "Wels"), ("3100", "St. Pölten"),
    ("6850", "Dornbirn"), ("2700", "Wiener Neustadt"), ("2340", "Mödling"), ("8700", "Leoben"),
)
_STREETS = (
    "Hauptstraße", "Mariahilfer Straße", "Bahnhofstraße", "Schönbrunner Straße", "Grazer Gasse", "Dorfplatz",
    "Kärntner Ring", "Südtiroler Platz", "Lerchenfelder Gürtel", "Wiener Straße",
)
_DEVICES = (
    ("Smartphone", "Apple", ("iPhone 11", "iPhone 12", "iPhone 13", "iPhone 14 Pro", "iPhone 15", "iPhone SE (2022)")),
    ("Smartphone", "Samsung", ("Galaxy S21", "Galaxy S23", "Galaxy A52", "Galaxy A54 5G", "Galaxy Z Flip5")),
    ("Smartphone", "Xiaomi", ("Redmi Note 12", "Mi 11 Lite", "Poco F5")),
    ("Smartphone", "Google", ("Pixel 7", "Pixel 8 Pro")),
    ("Smartphone", "Huawei", ("P30 Pro", "P40 lite")),
    ("Tablet", "Apple", ("iPad Air (5. Gen.)", "iPad 9")),
    ("Tablet", "Samsung", ("Galaxy Tab S8", "Galaxy Tab A8")),
    ("Laptop", "Lenovo", ("ThinkPad T14", "IdeaPad 5")),
    ("Laptop", "Apple", ('MacBook Air 13" M1', "MacBook Pro 14")),
    ("Smartwatch", "Apple", ("Watch Series 7", "Watch SE")),
    ("Spielekonsole", "Nintendo", ("Switch", "Switch OLED")),
    ("Spielekonsole", "Sony", ("PlayStation 5",)),
)
_DEVICE_LIST: tuple[tuple[str, str, str], ...] = tuple((t, b, m) for t, b, ms in _DEVICES for m in ms)
_ISSUES = (
    "Display gebrochen", "Akku schwach", "Ladebuchse defekt", "Wasserschaden", "Kamera unscharf",
    "Lautsprecher knackt", "Backcover gesprungen", "Face ID funktioniert nicht", "Bootloop nach Update",
    "Mikrofon ohne Funktion", "Touchscreen reagiert nicht", "Gerät überhitzt",
)
_DEVICE_COMBOS: tuple[str, ...] = tuple(
    "\t".join(_e(v) for v in (t, b, m, i)) for (t, b, m) in _DEVICE_LIST for i in _ISSUES
)
_NOTES: tuple[str, ...] = tuple(
    _e(n)
    for n in (
        "Kunde wartet 😊", "Schutzfolie bitte entfernen\nHülle liegt bei", "Rückruf erwünscht 📞",
        "Gerät fällt öfter runter 🙈", "Code siehe Zettel", "Express!\tHeute noch", "Backslash \\ im Text",
        "Sehr dringend – Geschäftshandy", "Daten sichern!", "Hat Garantie bis 03/2025",
    )
)
_TECH_NOTES: tuple[str, ...] = tuple(
    _e(n)
    for n in ("Display getauscht, Test ok ✅", "Akku 78 % Kapazität", "Platine korrodiert", "Kleber erneuert")
)
_REPAIR_STATUSES = (
    ("abgeholt",) * 10
    + ("fertig",) * 3
    + ("in_reparatur", "in_reparatur", "eingegangen", "eingegangen")
    + ("ersatzteile_bestellen", "warten_auf_ersatzteile", "ersatzteil_eingetroffen", "ausser_haus")
)
_STATUS_FLOW = ("eingegangen", "in_reparatur", "ersatzteile_bestellen", "warten_auf_ersatzteile",
                "ersatzteil_eingetroffen", "fertig", "abgeholt")
_PRICES: tuple[str, ...] = tuple(_euro(e * 100 + c) for e in (29, 39, 49, 69, 89, 99, 129, 149, 189, 249, 299)
                                 for c in (0, 90, 50)) + ("0,00", "80", "149,90")
_PARTS = (
    "Display iPhone 13 (OLED)", "Akku Galaxy S21", "Ladebuchse USB-C", "Backcover Glas", "Kameramodul hinten",
    "Lautsprecher unten", "Face-ID-Flexkabel", "Displaykleber", "Touchscreen-Digitizer", "SIM-Schlitten",
)
_SUPPLIERS = ("Foneday", "iParts4u", "Mobile Sentrix", "Reparaturteile Müller", "AliExpress", "Lokal")
_ARTICLES = (
    ("Panzerglas iPhone 13", 1490), ("Ladekabel USB-C 2 m", 1290), ("Hülle Galaxy S23 – schwarz", 1990),
    ("Netzteil 20 W", 2490), ("Powerbank 10.000 mAh", 2990), ('Schutzfolie iPad 10,9"', 1990),
    ("Kopfhörer-Adapter Lightning", 990), ("Autohalterung Magsafe", 2490),
)
_CONDITIONS = ("sehr gut", "gut", "Kratzer am Display", "Gebrauchsspuren", "neuwertig")
_LOANER_STATUS = ("verfügbar",) * 6 + ("verliehen",) * 3 + ("defekt", "wartung")
_TEMPLATES = (
    ("Reparatur abholbereit", "Ihr Gerät ist fertig – Auftrag {{auftragsnummer}}",
     "Hallo {{kundenname}},\n\nIhr {{geraet}} ist fertig und kann abgeholt werden.\n\nLiebe Grüße\n{{geschaeftsname}}",
     ("kundenname", "auftragsnummer", "geraet", "geschaeftsname")),
    ("Ersatzteil eingetroffen", "Ersatzteil für {{geraet}} ist da",
     "Hallo {{kundenname}},\n\ndas Ersatzteil ist eingetroffen. Wir melden uns! 🔧",
     ("kundenname", "geraet")),
    ("Zubehör eingetroffen", "Ihre Bestellung ist abholbereit",
     "Grüß Gott {{kundenname}},\n\nIhr Zubehör \"{{artikel}}\" liegt zur Abholung bereit.",
     ("kundenname", "artikel")),
    ("Kostenvoranschlag", "Kostenvoranschlag {{kv_nummer}}",
     "Sehr geehrte/r {{kundenname}},\n\nanbei der Kostenvoranschlag über {{betrag}} €.",
     ("kundenname", "kv_nummer", "betrag")),
    ("Bewertung anfragen", "Wie zufrieden waren Sie? ⭐",
     "Hallo {{kundenname}},\n\nwir freuen uns über Ihre Bewertung: {{bewertungslink}}",
     ("kundenname", "bewertungslink")),
    ("Auftragsbestätigung", "Auftrag {{auftragsnummer}} angenommen",
     "Hallo {{kundenname}},\n\nwir haben Ihr Gerät erhalten. Status: {{status}}.",
     ("kundenname", "auftragsnummer", "status")),
)
_DEVICE_TYPE_NAMES = ("Smartphone", "Tablet", "Laptop", "Smartwatch", "Spielekonsole", "Kopfhörer", "E-Reader")
_BRAND_NAMES = ("Apple", "Samsung", "Xiaomi", "Google", "Huawei", "OnePlus", "Sony", "Nintendo", "Lenovo", "Oppo",
                "Motorola", "Nokia", "Fairphone", "Honor")
_MODEL_NAMES = tuple(m for _, _, ms in _DEVICES for m in ms) + ("Mate 20", "Nord 2", "Xperia 10 IV", "Fairphone 4")
_KIOSK_NAMES = ("Kiosk Theke", "Tablet Eingang", "Kiosk Schaufenster")
_SUPPORT_REASONS = (
    "Kunde meldet fehlende Reparaturen", "Hilfe beim E-Mail-Versand (SMTP)", "Datenkorrektur nach Import",
    "Drucklayout Etiketten prüfen",
)
_ENTITIES = ("repairs", "customers", "repairs,customers", "email_templates", "cost_estimates,repairs")
_PERMISSIONS = (
    {"canViewRepairs": True, "canEditRepairs": True, "canViewCustomers": True, "canDeleteRepairs": False},
    {"canViewRepairs": True, "canEditRepairs": False, "canViewCustomers": True, "canViewStatistics": False},
)

# Rows per shop at scale 1.0 (≈ 2,000 in all); employees and kiosk_online_status follow the users/devices.
BASE_COUNTS: dict[str, int] = {
    "customers": 300,
    "loaner_devices": 15,
    "repairs": 500,
    "repair_status_history": 500,
    "spare_parts": 120,
    "cost_estimates": 60,
    "email_templates": 10,
    "orders": 80,
    "device_types": 6,
    "user_brands": 20,
    "user_models": 80,
    "qr_codes": 40,
    "signatures": 100,
    "email_log": 150,
    "newsletter_subscribers": 8,
    "kiosk_devices": 2,
    "kiosk_online_status": 2,
    "employees": 3,
    "support_access_tokens": 4,
}


