/* The demo shop's cart, kept in localStorage, and the last order, kept in sessionStorage.
   Prices are integer cents everywhere; euros() formats them ("12.50") for display and for the tag. */
var Shop = (function () {
  'use strict';

  var CART_KEY = 'shop_cart';
  var ORDER_KEY = 'shop_last_order';

  function euros(cents) {
    return (cents / 100).toFixed(2);
  }

  function read(storage, key, fallback) {
    try {
      var value = JSON.parse(storage.getItem(key));
      return value === null ? fallback : value;
    } catch (e) {
      return fallback;  // unreadable or blocked storage: start afresh
    }
  }

  function cart() {
    var lines = read(window.localStorage, CART_KEY, []);
    return Array.isArray(lines) ? lines : [];
  }

  function saveCart(lines) {
    window.localStorage.setItem(CART_KEY, JSON.stringify(lines));
    renderCartCount();
  }

  function total(lines) {
    return lines.reduce(function (sum, line) { return sum + line.price * line.quantity; }, 0);
  }

  function addToCart(product) {
    var lines = cart();
    var line = lines.filter(function (l) { return l.sku === product.sku; })[0];
    if (line) {
      line.quantity += 1;
    } else {
      lines.push({sku: product.sku, name: product.name, price: product.price, quantity: 1});
    }
    saveCart(lines);
  }

  function clearCart() {
    saveCart([]);
  }

  function renderCartCount() {
    var count = cart().reduce(function (sum, line) { return sum + line.quantity; }, 0);
    document.getElementById('cart-count').textContent = String(count);
  }

  function cell(row, text) {
    var td = document.createElement('td');
    td.textContent = text;
    row.appendChild(td);
  }

  function renderCart() {
    var lines = cart();
    var body = document.getElementById('cart-lines');
    lines.forEach(function (line) {
      var row = document.createElement('tr');
      row.id = 'cart-line-' + line.sku;
      cell(row, line.name);
      cell(row, String(line.quantity));
      cell(row, '€' + euros(line.price));
      cell(row, '€' + euros(line.price * line.quantity));
      body.appendChild(row);
    });
    document.getElementById('cart-total').textContent = '€' + euros(total(lines));
    document.getElementById('cart-empty').hidden = lines.length > 0;
  }

  function bindCheckout() {
    document.getElementById('checkout-total').textContent = '€' + euros(total(cart()));
    document.getElementById('checkout-form').addEventListener('submit', function (event) {
      event.preventDefault();
      var lines = cart();
      if (!lines.length) {
        document.getElementById('checkout-error').hidden = false;
        return;
      }
      var order = {id: 'ORD-' + Date.now(), lines: lines, total: total(lines), confirmed: false};
      window.sessionStorage.setItem(ORDER_KEY, JSON.stringify(order));
      window.location.assign('/order/' + encodeURIComponent(order.id));
    });
  }

  // The order placed at checkout; when there is none (the URL typed by hand), the current cart.
  function findOrder(id) {
    var order = read(window.sessionStorage, ORDER_KEY, null);
    if (order && order.id === id) return order;
    var lines = cart();
    return lines.length ? {id: id, lines: lines, total: total(lines), confirmed: false} : null;
  }

  function confirmOrder(order) {
    order.confirmed = true;
    window.sessionStorage.setItem(ORDER_KEY, JSON.stringify(order));
    clearCart();
  }

  function showStock(sku, element) {
    fetch('/api/stock/' + encodeURIComponent(sku))
      .then(function (response) { return response.ok ? response.json() : {in_stock: null}; })
      .then(function (stock) {
        element.textContent = stock.in_stock === null ? 'unknown' : (stock.in_stock ? 'in stock' : 'sold out');
      })
      .catch(function () { element.textContent = 'unknown'; });
  }

  function renderDeals(deals, list) {
    (Array.isArray(deals) ? deals : []).forEach(function (deal) {
      var item = document.createElement('li');
      item.textContent = String(deal.name || deal);
      list.appendChild(item);
    });
  }

  renderCartCount();

  return {
    euros: euros, cart: cart, addToCart: addToCart, clearCart: clearCart, renderCart: renderCart,
    bindCheckout: bindCheckout, findOrder: findOrder, confirmOrder: confirmOrder,
    showStock: showStock, renderDeals: renderDeals
  };
})();
