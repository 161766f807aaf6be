// GraphiQL for FraiseQL: the endpoint next to this page, and the usual URL wiring — a link
// with ?query=, ?variables= and ?operationName= opens with them in the editors, and edits
// are written back to the address bar, so the page's URL can be shared.
(function () {
  var params = new URLSearchParams(window.location.search);
  function update(key) {
    return function (value) {
      var next = new URLSearchParams(window.location.search);
      if (value) {
        next.set(key, value);
      } else {
        next.delete(key);
      }
      var qs = next.toString();
      window.history.replaceState(null, '', window.location.pathname + (qs ? '?' + qs : ''));
    };
  }
  var fetcher = GraphiQL.createFetcher({
    url: new URL('/graphql', window.location.href).toString(),
  });
  var props = {
    fetcher: fetcher,
    defaultEditorToolbarOpen: true,
    onEditQuery: update('query'),
    onEditVariables: update('variables'),
    onEditOperationName: update('operationName'),
  };
  if (params.has('query')) props.query = params.get('query');
  if (params.has('variables')) props.variables = params.get('variables');
  if (params.has('operationName')) props.operationName = params.get('operationName');
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, props)
  );
})();
