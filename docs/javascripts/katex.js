// Renders the formulas that pymdownx.arithmatex (generic mode) leaves as \( ... \) and \[ ... \]
// with the KaTeX copy in vendor/katex (no request leaves the machine). document$ is the theme's
// page observable, so formulas are rendered again after every page change.
document$.subscribe(({ body }) => {
  for (const element of body.querySelectorAll(".arithmatex")) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    })
  }
})
