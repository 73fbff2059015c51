"""The demo shop: a small website on its own origin, instrumented with the `_uxa` tag the API serves.

`dataexport demo` serves it beside the API so a newcomer can click around, then export their own session.
Every page loads the tag from `tag_src` (the API's origin) and uses `window._uxa` as the vendor documents it;
the pages' pushes are inline in the templates, where they are easy to read next to the markup they track.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader
from starlette.exceptions import HTTPException as StarletteHTTPException

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int  # integers, so no float ever rounds a price
    category: str
    color: str
    blurb: str


PRODUCTS: dict[str, Product] = {
    p.sku: p
    for p in (
        Product("SKU-MUG", "Enamel mug", 1250, "kitchen", "white", "A camping mug that survives the dishwasher."),
        Product("SKU-TEE", "Organic T-shirt", 1990, "apparel", "navy", "Soft organic cotton, cut straight."),
        Product("SKU-CAP", "Canvas cap", 1500, "accessories", "khaki", "Washed canvas with an adjustable strap."),
        Product("SKU-BAG", "Tote bag", 3495, "bags", "black", "Heavy canvas tote with an inner pocket."),
    )
}

# The single-page app's steps: /app is step 1, /app/step-N the others.
APP_STEPS = ["Pick a plan", "Your details", "Delivery", "Review"]
# Order ids come from the checkout's script ('ORD-' + Date.now()); the tag keeps 40 characters of an id.
ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def euros(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def create_shop_app(tag_src: str) -> FastAPI:
    """The shop's ASGI app; `tag_src` is the absolute URL of the tag script, e.g. `http://127.0.0.1:8000/tag/<id>.js`."""
    env = Environment(loader=PackageLoader("dataexport.demo.shop", "templates"), autoescape=True)
    env.filters["euros"] = euros
    app = FastAPI(title="dataexport demo shop", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(tag_src=tag_src, **context)
        return HTMLResponse(html, status_code=status_code)

    @app.exception_handler(StarletteHTTPException)
    async def not_found(request: Request, exc: StarletteHTTPException) -> HTMLResponse | JSONResponse:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        if exc.status_code == 404:
            return page("not_found.html", status_code=404)
        return HTMLResponse(str(exc.detail), status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return page("home.html", products=list(PRODUCTS.values()))

    @app.get("/product/{sku}", response_class=HTMLResponse)
    def product(sku: str) -> HTMLResponse:
        if sku not in PRODUCTS:
            raise StarletteHTTPException(404, "unknown product")
        return page("product.html", product=PRODUCTS[sku])

    @app.get("/cart", response_class=HTMLResponse)
    def cart() -> HTMLResponse:
        return page("cart.html")

    @app.get("/checkout", response_class=HTMLResponse)
    def checkout() -> HTMLResponse:
        return page("checkout.html")

    @app.get("/order/{order_id}", response_class=HTMLResponse)
    def order(order_id: str) -> HTMLResponse:
        if not ORDER_ID.fullmatch(order_id):
            raise StarletteHTTPException(404, "unknown order")
        return page("order.html", order_id=order_id)

    @app.get("/app", response_class=HTMLResponse)
    @app.get("/app/{step}", response_class=HTMLResponse)
    def spa(step: str = "step-1") -> HTMLResponse:
        number = int(step[5:]) if re.fullmatch(r"step-[1-9]", step) else 0
        if not 1 <= number <= len(APP_STEPS):
            raise StarletteHTTPException(404, "unknown step")
        return page("app.html", step=number, steps=APP_STEPS)

    @app.get("/deals", response_class=HTMLResponse)
    def deals() -> HTMLResponse:
        return page("deals.html")

    @app.get("/broken", response_class=HTMLResponse)
    def broken() -> HTMLResponse:
        return page("broken.html")

    @app.get("/api/deals")
    def api_deals() -> JSONResponse:
        # Always down: the tag records the failed call as an API error of the view.
        return JSONResponse({"error": "deals service unavailable"}, status_code=503)

    @app.get("/api/stock/{sku}")
    def api_stock(sku: str) -> dict[str, Any]:
        if sku not in PRODUCTS:
            raise StarletteHTTPException(404, "unknown product")
        return {"sku": sku, "in_stock": True}

    return app
