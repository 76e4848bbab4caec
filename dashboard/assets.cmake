# The files the node serves, as <file under dashboard/>=<URL path>. Read by
# dashboard/CMakeLists.txt (dependencies) and embed_assets.cmake (the
# generated .cc). A new file of the page is added here and nowhere else.
set(DASHBOARD_ASSETS
    "index.html=/dashboard/index.html"
    "app.css=/dashboard/app.css"
    "favicon.svg=/dashboard/favicon.svg"
    "js/app.js=/dashboard/js/app.js"
    "js/api.js=/dashboard/js/api.js"
    "js/sse.js=/dashboard/js/sse.js"
    "js/series.js=/dashboard/js/series.js"
    "js/format.js=/dashboard/js/format.js"
    "vendor/uPlot.iife.min.js=/dashboard/vendor/uPlot.iife.min.js"
    "vendor/uPlot.min.css=/dashboard/vendor/uPlot.min.css"
    "vendor/uPlot.LICENSE=/dashboard/vendor/uPlot.LICENSE")
