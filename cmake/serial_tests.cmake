# Included by ctest after the discovered tests are defined. Tests that load both cores on
# purpose (the overload tests, gaon-bench's closed and open loops against memcached) run
# alone, so they neither disturb the timing of others nor are disturbed by them: run side
# by side under ASan, the open loop's replies came later than its timeout.
set_tests_properties(Overload.GaondStaysResponsiveBoundedAndAccountsForEveryFrame
                     BumpTest.OverloadKeepsGaondResponsiveAndEveryFrameAccountedFor
                     BenchTool.ClosedLoopAsciiAndBinaryWithVerification
                     BenchTool.OpenLoopHoldsItsRateAndWritesAreStored
                     PROPERTIES RUN_SERIAL TRUE)
