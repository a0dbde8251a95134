# Included by ctest after the discovered tests are defined: tests that load both cores on
# purpose (the overload tests) run alone, so they neither disturb the timing of others nor
# are disturbed by them.
set_tests_properties(Overload.GaondStaysResponsiveBoundedAndAccountsForEveryFrame
                     BumpTest.OverloadKeepsGaondResponsiveAndEveryFrameAccountedFor
                     PROPERTIES RUN_SERIAL TRUE)
