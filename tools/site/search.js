// Published as assets/search.js by tools/mkdocs_hooks.py: lets a whole error message, pasted
// into the search box, find the recipe page that holds it. The box keeps the text as typed;
// only the query sent to Material's search worker changes.
//
// Material hands the query to lunr, which reads "word:" as a field name, "~" and "^" as
// fuzziness and boost, "*" as a wildcard and a leading "+" or "-" as presence: a message such
// as "ValueError: cannot squeeze axis=-1: ..." lost the words before its colons, or failed to
// parse and found nothing. Those characters become spaces.
//
// Material also appends a wildcard to every word, so "shape" matches "shapes", "shape_a" and
// more: for a long query the pages with most words sharing its prefixes won, not the page
// with its words. From five words on (a pasted message, not a word being typed) each word is
// matched whole: "^1", a boost of 1 that changes nothing, is the one suffix that keeps
// Material from appending the wildcard. Quotes, which make words required, go too.
const QUERY = 2 // Material's SearchMessageType.QUERY
const WHOLE_WORDS_FROM = 5

function forLunr(query) {
  const words = query.replace(/[:~^*+\-\\]/g, " ").split(/\s+/).filter(Boolean)
  if (words.length < WHOLE_WORDS_FROM) return words.join(" ")
  return words
    .map(word => word.replace(/"/g, ""))
    .filter(Boolean)
    .map(word => `${word}^1`)
    .join(" ")
}

const send = Worker.prototype.postMessage
Worker.prototype.postMessage = function (message, ...rest) {
  if (message && message.type === QUERY && typeof message.data === "string")
    message = { ...message, data: forLunr(message.data) }
  return send.call(this, message, ...rest)
}
