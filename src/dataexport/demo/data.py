"""The world the demo generator draws from: geography, devices, browsers, a shop's site map. Data only."""

from __future__ import annotations

SITE = "https://www.shop.example"

# (country_code, city, language, weight)
GEOGRAPHY = [
    ("FR", "Paris", "fr", 18),
    ("FR", "Lyon", "fr", 6),
    ("FR", "Marseille", "fr", 4),
    ("US", "New York", "en", 12),
    ("US", "San Francisco", "en", 6),
    ("US", "Chicago", "en", 5),
    ("GB", "London", "en", 10),
    ("GB", "Manchester", "en", 3),
    ("DE", "Berlin", "de", 7),
    ("DE", "Munich", "de", 4),
    ("ES", "Madrid", "es", 5),
    ("IT", "Milan", "it", 4),
    ("JP", "Tokyo", "ja", 4),
    ("BR", "São Paulo", "pt", 4),
    ("CA", "Montréal", "fr", 3),
    ("NL", "Amsterdam", "nl", 3),
    ("AU", "Sydney", "en", 2),
]

# device_id -> share of users: desktop 45%, mobile web 40%, tablet web 6%, mobile app 6%, tablet app 3%
DEVICE_SHARES = {1: 0.45, 2: 0.40, 3: 0.06, 4: 0.06, 5: 0.03}

# device_id -> [(browser, [versions], platform, [platform versions], weight)] for the web devices
BROWSERS = {
    1: [
        ("Chrome", ["118.0", "119.0", "120.0", "121.0"], "Windows", ["10", "11"], 45),
        ("Chrome", ["119.0", "120.0", "121.0"], "Mac OS X", ["13.6", "14.1", "14.2"], 12),
        ("Edge", ["119.0", "120.0"], "Windows", ["10", "11"], 15),
        ("Firefox", ["119.0", "120.0", "121.0"], "Windows", ["10", "11"], 7),
        ("Firefox", ["120.0"], "Linux", ["x86_64"], 3),
        ("Safari", ["16.6", "17.1", "17.2"], "Mac OS X", ["13.6", "14.1", "14.2"], 18),
    ],
    2: [
        ("Chrome Mobile", ["119.0", "120.0", "121.0"], "Android", ["12", "13", "14"], 52),
        ("Safari Mobile", ["16.6", "17.1", "17.2"], "iOS", ["16.6", "17.1", "17.2"], 40),
        ("Samsung Internet", ["22.0", "23.0"], "Android", ["13", "14"], 8),
    ],
    3: [
        ("Safari Mobile", ["16.6", "17.1", "17.2"], "iPadOS", ["16.6", "17.1", "17.2"], 65),
        ("Chrome Mobile", ["120.0", "121.0"], "Android", ["13", "14"], 35),
    ],
}
# device_id -> [(manufacturer, model, os, [os versions], density, screen (h, w), weight)] for the apps
APP_DEVICES = {
    4: [
        ("Apple", "iPhone15,2", "iOS", ["16.6", "17.1", "17.2"], 3.0, (2556, 1179), 50),
        ("Samsung", "SM-S918B", "Android", ["13", "14"], 3.5, (3088, 1440), 30),
        ("Google", "Pixel 8", "Android", ["14"], 2.625, (2400, 1080), 20),
    ],
    5: [
        ("Apple", "iPad13,1", "iPadOS", ["16.6", "17.1"], 2.0, (2360, 1640), 70),
        ("Samsung", "SM-X700", "Android", ["13", "14"], 2.0, (2560, 1600), 30),
    ],
}
APP_VERSIONS = ["4.11.0", "4.12.0", "4.12.1", "5.0.0"]
SCREENS = {
    1: [(1080, 1920), (900, 1440), (1440, 2560), (768, 1366)],
    2: [(844, 390), (915, 412), (932, 430)],
    3: [(1180, 820), (1366, 1024)],
}

# Page types of the site map: (name, dataType custom var, weight as a next page)
PAGE_TYPES = [
    ("home", "content", 14),
    ("category", "listing", 26),
    ("product", "product", 34),
    ("search", "listing", 10),
    ("blog", "content", 6),
    ("cart", "cart", 6),
    ("account", "account", 4),
]
FUNNEL = ["cart", "checkout", "confirmation"]  # the last pages of a converting session
CATEGORIES = ["women", "men", "kids", "shoes", "accessories", "home", "sale", "new-in"]
SEARCH_TERMS = ["dress", "sneakers", "jacket", "summer+sale", "bag", "jeans", "gift", "running"]
BLOG_POSTS = ["how-to-choose-running-shoes", "spring-trends", "care-guide-denim", "gift-ideas"]
PRODUCTS = 400  # product ids 1000..1399

# (traffic source, weight, referer, utm (source, medium, campaign) or None, landing page type)
TRAFFIC_SOURCES = [
    ("Direct", 30, None, None, "home"),
    ("Organic Search", 30, "https://www.google.com/", None, "product"),
    ("Paid Search", 15, "https://www.google.com/", ("google", "cpc", "brand_search"), "category"),
    ("Social", 10, "https://www.facebook.com/", ("facebook", "social", "winter_collection"), "product"),
    ("Email", 8, None, ("newsletter", "email", "weekly_digest"), "category"),
    ("Referral", 7, "https://blog.fashion.example/best-of", None, "blog"),
]
AB_VARIANTS = ["A", "B", "control"]

# Relative traffic per hour of day (UTC) and per weekday (Monday first).
HOURLY = [
    2,
    1.2,
    0.8,
    0.6,
    0.6,
    0.9,
    1.8,
    3.2,
    4.6,
    5.2,
    5.4,
    5.6,
    6.0,
    5.8,
    5.5,
    5.4,
    5.5,
    5.9,
    6.4,
    7.2,
    7.6,
    7.0,
    5.2,
    3.4,
]
WEEKDAY = [1.0, 1.04, 1.02, 1.0, 0.95, 0.82, 0.86]

JS_ERRORS = [
    ("TypeError: Cannot read properties of undefined (reading 'price')", "https://www.shop.example/js/app.js"),
    ("ReferenceError: dataLayer is not defined", "https://www.shop.example/js/tags.js"),
    ("Script error.", "https://cdn.payments.example/sdk.js"),
]
APP_EVENT_NAMES = {0: "app_start", 1: "app_show", 2: "app_hide"}
